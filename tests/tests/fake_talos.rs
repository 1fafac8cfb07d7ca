//! The fake Talos node itself, through a raw tonic client: mutual TLS, roles, apply semantics, reads, upgrade cycles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nodectl_e2e::fake_talos::apid::{
    EXTENSION_STATUS_TYPE, KERNEL_CMDLINE_TYPE, MACHINE_CONFIG_TYPE, SECURITY_STATE_TYPE,
};
use nodectl_e2e::fake_talos::node::config_v1_12;
use nodectl_e2e::fake_talos::{FakeTalos, Role, Scenario, Schematic};
use nodectl_proto::cosi::resource::state_client::StateClient;
use nodectl_proto::cosi::resource::{GetRequest, ListRequest, Resource};
use nodectl_proto::machine::apply_configuration_request::Mode;
use nodectl_proto::machine::machine_service_client::MachineServiceClient;
use nodectl_proto::machine::{
    ApplyConfiguration, ApplyConfigurationRequest, ReadRequest, UpgradeRequest,
};
use nodectl_proto::resource::config::MachineConfigSpec;
use nodectl_proto::talos::resource::definitions::runtime::{
    ExtensionStatusSpec, KernelCmdlineSpec, SecurityStateSpec,
};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::Channel;
use tonic::{Code, Request};

fn to_node<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "node",
        tonic::metadata::MetadataValue::from_static("127.0.0.1"),
    );
    request
}

async fn machine(fake: &FakeTalos, role: Role) -> MachineServiceClient<Channel> {
    MachineServiceClient::new(fake.channel(Some(role)).await.unwrap())
}

async fn read(
    client: &mut MachineServiceClient<Channel>,
    path: &str,
) -> Result<String, tonic::Status> {
    let mut stream = client
        .read(to_node(ReadRequest {
            path: path.to_owned(),
        }))
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.bytes);
    }
    Ok(String::from_utf8(bytes).unwrap())
}

async fn apply(
    client: &mut MachineServiceClient<Channel>,
    config: &str,
    mode: Mode,
    dry_run: bool,
) -> Result<ApplyConfiguration, tonic::Status> {
    let response = client
        .apply_configuration(to_node(ApplyConfigurationRequest {
            data: config.as_bytes().to_vec(),
            mode: mode.into(),
            dry_run,
            try_mode_timeout: None,
        }))
        .await?;
    Ok(response.into_inner().messages.remove(0))
}

async fn get(
    fake: &FakeTalos,
    role: Role,
    namespace: &str,
    kind: &str,
    id: &str,
) -> Result<Resource, tonic::Status> {
    let mut cosi = StateClient::new(fake.channel(Some(role)).await.unwrap());
    let response = cosi
        .get(to_node(GetRequest {
            namespace: namespace.to_owned(),
            r#type: kind.to_owned(),
            id: id.to_owned(),
            options: None,
        }))
        .await?;
    Ok(response.into_inner().resource.unwrap())
}

fn machine_config(resource: &Resource) -> String {
    let spec =
        MachineConfigSpec::decode(resource.spec.as_ref().unwrap().proto_spec.as_slice()).unwrap();
    String::from_utf8(spec.yaml_marshalled).unwrap()
}

async fn running_config(fake: &FakeTalos) -> String {
    machine_config(
        &get(fake, Role::Admin, "config", MACHINE_CONFIG_TYPE, "v1alpha1")
            .await
            .unwrap(),
    )
}

/// The legacy config with `amdgpu.cwsr_enable=0` added to `machine.install.extraKernelArgs`.
fn legacy_with_cwsr_off(config: &str) -> String {
    let edited = config.replace(
        "            - amd_iommu=off\n",
        "            - amd_iommu=off\n            - amdgpu.cwsr_enable=0\n",
    );
    assert_ne!(edited, config);
    edited
}

/// A minimal HTTP/1.1 exchange with the fake factory: (status, body).
async fn http(
    fake: &FakeTalos,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(fake.factory.addr)
        .await
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        fake.factory.host(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

async fn wait_for_down_then_up(fake: &FakeTalos, client: &mut MachineServiceClient<Channel>) {
    // Down: calls fail while it reboots.
    let mut saw_down = false;
    for _ in 0..100 {
        if client.version(to_node(())).await.is_err() {
            saw_down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_down, "the node never went down");
    fake.wait_until_up(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_an_admin_certificate_works() {
    let fake = FakeTalos::start(Scenario::uki()).await.unwrap();
    let mut client = machine(&fake, Role::Admin).await;
    let version = client.version(to_node(())).await.unwrap().into_inner();
    assert_eq!(version.messages[0].version.as_ref().unwrap().tag, "v1.12.1");
    let cmdline = read(&mut client, "/proc/cmdline").await.unwrap();
    assert!(
        cmdline.ends_with(" amd_iommu=off ttm.pages_limit=25165824\n"),
        "{cmdline}"
    );
    assert_eq!(
        read(&mut client, "/sys/module/amdgpu/parameters/cwsr_enable")
            .await
            .unwrap(),
        "1\n"
    );
    let missing = read(&mut client, "/sys/module/amdgpu/parameters/nope")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let calls = fake.calls();
    assert!(calls.iter().all(|c| c.node.as_deref() == Some("127.0.0.1")));
    assert!(calls.iter().all(|c| c.organizations == ["os:admin"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let fake = FakeTalos::start(Scenario::uki()).await.unwrap();
    // The handshake fails (at connect or at the first call, depending on TLS 1.3 timing).
    let refused = match fake.channel(None).await {
        Err(_) => true,
        Ok(channel) => MachineServiceClient::new(channel)
            .version(to_node(()))
            .await
            .is_err(),
    };
    assert!(refused);
    assert!(fake.calls().is_empty(), "no call may reach the services");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_may_read_versions_and_states_but_not_configs_or_writes() {
    let fake = FakeTalos::start(Scenario::uki()).await.unwrap();
    let config = fake.node().running.text;
    let mut reader = machine(&fake, Role::Reader).await;
    assert!(reader.version(to_node(())).await.is_ok());
    let denied = apply(&mut reader, &config, Mode::NoReboot, false)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        read(&mut reader, "/proc/cmdline").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let upgrade = reader
        .upgrade(to_node(UpgradeRequest {
            image: "x".to_owned(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(upgrade.code(), Code::PermissionDenied);
    let mc = get(
        &fake,
        Role::Reader,
        "config",
        MACHINE_CONFIG_TYPE,
        "v1alpha1",
    )
    .await
    .unwrap_err();
    assert_eq!(mc.code(), Code::PermissionDenied);
    let state = get(
        &fake,
        Role::Reader,
        "runtime",
        SECURITY_STATE_TYPE,
        "securitystate",
    )
    .await
    .unwrap();
    let state = SecurityStateSpec::decode(state.spec.unwrap().proto_spec.as_slice()).unwrap();
    assert!(state.booted_with_uki);
    assert!(fake.writes().iter().all(|c| c.error.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configs_get_talos_texts() {
    let fake = FakeTalos::start(Scenario::uki()).await.unwrap();
    let mut client = machine(&fake, Role::Admin).await;
    let config = fake.node().running.text;

    let no_v1alpha1 = apply(
        &mut client,
        "apiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n",
        Mode::NoReboot,
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(no_v1alpha1.code(), Code::InvalidArgument);
    assert_eq!(
        no_v1alpha1.message(),
        "the applied machine configuration doesn't contain v1alpha1 config, did you mean to patch the machine config instead?"
    );

    let broken = apply(&mut client, "machine: [\n", Mode::NoReboot, false)
        .await
        .unwrap_err();
    assert_eq!(broken.code(), Code::InvalidArgument);

    // 1.12 configs carry grubUseUKICmdline: true; extraKernelArgs beside it is a validation error.
    let both = config.replace(
        "        grubUseUKICmdline: true\n",
        "        grubUseUKICmdline: true\n        extraKernelArgs:\n            - amdgpu.cwsr_enable=0\n",
    );
    let err = apply(&mut client, &both, Mode::NoReboot, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains(
            "install.extraKernelArgs and install.grubUseUKICmdline can't be used together"
        )
    );

    // NO_REBOOT and TRY refuse what needs a reboot.
    let retyped = config.replace("type: worker", "type: controlplane");
    for mode in [Mode::NoReboot, Mode::Try] {
        let err = apply(&mut client, &retyped, mode, false).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message()
                .starts_with("this config change can't be applied in immediate mode\ndiff:\n")
        );
    }
    assert_eq!(
        fake.node().running.text,
        config,
        "nothing refused was applied"
    );
    assert_eq!(fake.node().persistent.text, config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_kernel_args_on_systemd_boot_are_accepted_with_the_sdboot_warning() {
    let mut scenario = Scenario::uki();
    scenario.config_yaml = config_v1_12(false, &[]);
    let fake = FakeTalos::start(scenario).await.unwrap();
    let mut client = machine(&fake, Role::Admin).await;
    let with_args = config_v1_12(false, &["amdgpu.cwsr_enable=0"]);
    let answer = apply(&mut client, &with_args, Mode::NoReboot, false)
        .await
        .unwrap();
    assert_eq!(
        answer.warnings,
        ["extra kernel arguments are not supported when booting using SDBoot"]
    );
    assert_eq!(
        answer.mode_details,
        "Applied configuration without a reboot"
    );
    assert_eq!(answer.mode(), Mode::NoReboot);
    // Accepted, yet the command line is unchanged: sd-boot ignores it.
    assert_eq!(
        read(&mut client, "/sys/module/amdgpu/parameters/cwsr_enable")
            .await
            .unwrap(),
        "1\n"
    );
    assert_eq!(running_config(&fake).await, with_args);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_and_summarises() {
    let fake = FakeTalos::start(Scenario::legacy_grub()).await.unwrap();
    let mut client = machine(&fake, Role::Admin).await;
    let config = fake.node().running.text;
    let edited = legacy_with_cwsr_off(&config);

    let answer = apply(&mut client, &edited, Mode::NoReboot, true)
        .await
        .unwrap();
    assert!(answer.mode_details.starts_with(
        "Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).\nConfig diff:\n\n"
    ), "{}", answer.mode_details);
    assert!(
        answer
            .mode_details
            .contains("+            - amdgpu.cwsr_enable=0\n")
    );
    assert!(answer.warnings.is_empty());

    let same = apply(&mut client, &config, Mode::Auto, true).await.unwrap();
    assert_eq!(
        same.mode_details,
        "Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).\nConfig diff:\n\nNo changes."
    );
    assert_eq!(same.mode(), Mode::NoReboot);
    assert_eq!(fake.node().running.text, config);
    assert_eq!(fake.node().persistent.text, config);
    assert!(fake.writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_auto_and_no_reboot_modes() {
    let fake = FakeTalos::start(Scenario::legacy_grub()).await.unwrap();
    let mut client = machine(&fake, Role::Admin).await;
    let config = fake.node().running.text;
    let edited = legacy_with_cwsr_off(&config);

    let staged = apply(&mut client, &edited, Mode::Staged, false)
        .await
        .unwrap();
    assert_eq!(staged.mode(), Mode::Staged);
    assert_eq!(
        staged.mode_details,
        "Staged configuration to be applied after the next reboot"
    );
    assert_eq!(running_config(&fake).await, config);
    let persistent = get(
        &fake,
        Role::Admin,
        "config",
        MACHINE_CONFIG_TYPE,
        "persistent",
    )
    .await
    .unwrap();
    assert_eq!(machine_config(&persistent), edited);

    let auto = apply(&mut client, &edited, Mode::Auto, false)
        .await
        .unwrap();
    assert_eq!(
        auto.mode(),
        Mode::NoReboot,
        "an install edit resolves to NO_REBOOT"
    );
    assert_eq!(auto.mode_details, "Applied configuration without a reboot");
    assert_eq!(running_config(&fake).await, edited);
    // Applied, but the command line only changes on upgrade.
    assert_eq!(
        read(&mut client, "/sys/module/amdgpu/parameters/cwsr_enable")
            .await
            .unwrap(),
        "1\n"
    );

    // AUTO with a change that needs a reboot resolves to REBOOT and reboots.
    let retyped = edited.replace("type: worker", "type: controlplane");
    let answer = apply(&mut client, &retyped, Mode::Auto, false)
        .await
        .unwrap();
    assert_eq!(answer.mode(), Mode::Reboot);
    assert!(answer.mode_details.starts_with(
        "Applied configuration with a reboot: this config change can't be applied in immediate mode\ndiff:\n"
    ));
    wait_for_down_then_up(&fake, &mut client).await;
    let mut client = machine(&fake, Role::Admin).await;
    assert_eq!(running_config(&fake).await, retyped);
    // A plain reboot keeps the installed command line.
    assert_eq!(
        read(&mut client, "/sys/module/amdgpu/parameters/cwsr_enable")
            .await
            .unwrap(),
        "1\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_mode_reverts_after_its_timeout_unless_applied_over() {
    let fake = FakeTalos::start(Scenario::legacy_grub()).await.unwrap();
    let mut client = machine(&fake, Role::Admin).await;
    let config = fake.node().running.text;
    let edited = legacy_with_cwsr_off(&config);

    let answer = client
        .apply_configuration(to_node(ApplyConfigurationRequest {
            data: edited.as_bytes().to_vec(),
            mode: Mode::Try.into(),
            dry_run: false,
            try_mode_timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .messages
        .remove(0);
    assert_eq!(
        answer.mode_details,
        "Applied configuration without a reboot\nThe config is applied in 'try' mode and will be automatically reverted back in 1s"
    );
    assert_eq!(running_config(&fake).await, edited);
    assert_eq!(
        fake.node().persistent.text,
        config,
        "TRY is never persisted"
    );
    let mut reverted = false;
    for _ in 0..200 {
        if fake.node().running.text == config {
            reverted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reverted, "TRY config was not reverted");

    // Default timeout text, and a NO_REBOOT apply cancels the pending rollback.
    let answer = apply(&mut client, &edited, Mode::Try, false).await.unwrap();
    assert!(
        answer
            .mode_details
            .ends_with("will be automatically reverted back in 1m0s")
    );
    apply(&mut client, &edited, Mode::NoReboot, false)
        .await
        .unwrap();
    assert!(!fake.node().try_pending);
    assert_eq!(fake.node().persistent.text, edited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosi_resources_describe_the_node() {
    let fake = FakeTalos::start(Scenario::uki()).await.unwrap();
    let cmdline = get(
        &fake,
        Role::Reader,
        "runtime",
        KERNEL_CMDLINE_TYPE,
        "cmdline",
    )
    .await
    .unwrap();
    let cmdline = KernelCmdlineSpec::decode(cmdline.spec.unwrap().proto_spec.as_slice()).unwrap();
    assert_eq!(cmdline.cmdline, fake.node().cmdline);

    let mut cosi = StateClient::new(fake.channel(Some(Role::Reader)).await.unwrap());
    let mut stream = cosi
        .list(to_node(ListRequest {
            namespace: "runtime".to_owned(),
            r#type: EXTENSION_STATUS_TYPE.to_owned(),
            options: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut names = Vec::new();
    let mut schematic = None;
    while let Some(item) = stream.message().await.unwrap() {
        let spec =
            ExtensionStatusSpec::decode(item.resource.unwrap().spec.unwrap().proto_spec.as_slice())
                .unwrap();
        let meta = spec.metadata.unwrap();
        if meta.name == "schematic" {
            schematic = Some(meta.version);
        } else {
            names.push(meta.name);
        }
    }
    assert_eq!(names, ["amd-ucode", "amdgpu"]);
    assert_eq!(schematic.unwrap(), fake.node().schematic_id);
    assert_eq!(fake.node().schematic_id, Scenario::uki().schematic.id());

    let config = running_config(&fake).await;
    assert!(config.contains("kind: HostnameConfig"));
    let missing = get(&fake, Role::Admin, "config", MACHINE_CONFIG_TYPE, "nope")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_is_content_addressed_and_explains_errors() {
    let fake = FakeTalos::start(Scenario::uki()).await.unwrap();
    let current = fake.node().schematic_id;
    let (status, yaml) = http(
        &fake,
        "GET",
        &format!("/schematics/{current}"),
        "text/plain",
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(yaml.contains("siderolabs/amdgpu"));

    let body = yaml.replace(
        "        - amd_iommu=off\n",
        "        - amd_iommu=off\n        - amdgpu.cwsr_enable=0\n",
    );
    let (status, reply) = http(&fake, "POST", "/schematics", "application/yaml", &body).await;
    assert_eq!(status, 201);
    let id = serde_json::from_str::<serde_json::Value>(&reply).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 64);
    assert_ne!(id, current);
    // The same schematic again (as JSON this time) gets the same id.
    let json = serde_json::to_string(&Schematic::parse(body.as_bytes()).unwrap()).unwrap();
    let (status, again) = http(&fake, "POST", "/schematics", "application/json", &json).await;
    assert_eq!(status, 201);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&again).unwrap()["id"],
        id.as_str()
    );

    let (status, text) = http(
        &fake,
        "POST",
        "/schematics",
        "application/yaml",
        "customization:\n  extraKernelArg: [x]\n",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        text.starts_with("failed to unmarshal schematic: "),
        "{text}"
    );
    let (status, text) = http(&fake, "GET", "/schematics/0000", "text/plain", "").await;
    assert_eq!(status, 404);
    assert!(text.contains("not found"));
    assert_eq!(fake.factory_posts().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uki_upgrade_to_a_new_schematic_changes_the_command_line() {
    let fake = FakeTalos::start(Scenario::uki()).await.unwrap();
    let mut client = machine(&fake, Role::Admin).await;
    let mut schematic = Scenario::uki().schematic;
    schematic
        .customization
        .extra_kernel_args
        .push("amdgpu.cwsr_enable=0".to_owned());
    let (status, reply) = http(
        &fake,
        "POST",
        "/schematics",
        "application/yaml",
        &schematic.canonical_yaml(),
    )
    .await;
    assert_eq!(status, 201);
    let id = serde_json::from_str::<serde_json::Value>(&reply).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let unknown = client
        .upgrade(to_node(UpgradeRequest {
            image: format!(
                "{}/metal-installer/{}:v1.12.1",
                fake.factory.host(),
                "f".repeat(64)
            ),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(unknown.message().contains("not found"));
    assert!(fake.node().up);

    let image = format!("{}/metal-installer/{id}:v1.12.2", fake.factory.host());
    let ack = client
        .upgrade(to_node(UpgradeRequest {
            image: image.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.messages[0].ack, "Upgrade request received");
    wait_for_down_then_up(&fake, &mut client).await;

    let mut client = machine(&fake, Role::Admin).await;
    let cmdline = read(&mut client, "/proc/cmdline").await.unwrap();
    assert!(cmdline.contains(" amdgpu.cwsr_enable=0"), "{cmdline}");
    assert_eq!(
        read(&mut client, "/sys/module/amdgpu/parameters/cwsr_enable")
            .await
            .unwrap(),
        "0\n"
    );
    let version = client.version(to_node(())).await.unwrap().into_inner();
    assert_eq!(version.messages[0].version.as_ref().unwrap().tag, "v1.12.2");
    assert_eq!(fake.node().schematic_id, id);
    let upgrades: Vec<_> = fake
        .writes()
        .into_iter()
        .filter(|c| c.method == "Upgrade" && c.error.is_none())
        .collect();
    assert_eq!(upgrades.len(), 1);
    assert_eq!(upgrades[0].image.as_deref(), Some(image.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_grub_no_op_upgrade_applies_extra_kernel_args() {
    let fake = FakeTalos::start(Scenario::legacy_grub()).await.unwrap();
    let mut client = machine(&fake, Role::Admin).await;
    let config = fake.node().running.text;
    apply(
        &mut client,
        &legacy_with_cwsr_off(&config),
        Mode::NoReboot,
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        read(&mut client, "/sys/module/amdgpu/parameters/cwsr_enable")
            .await
            .unwrap(),
        "1\n"
    );

    let node = fake.node();
    let image = format!(
        "{}/metal-installer/{}:{}",
        fake.factory.host(),
        node.schematic_id,
        node.talos_version
    );
    client
        .upgrade(to_node(UpgradeRequest {
            image,
            ..Default::default()
        }))
        .await
        .unwrap();
    wait_for_down_then_up(&fake, &mut client).await;
    let mut client = machine(&fake, Role::Admin).await;
    let cmdline = read(&mut client, "/proc/cmdline").await.unwrap();
    assert!(
        cmdline
            .trim_end()
            .ends_with(" amd_iommu=off amdgpu.cwsr_enable=0"),
        "{cmdline}"
    );
    assert_eq!(
        read(&mut client, "/sys/module/amdgpu/parameters/cwsr_enable")
            .await
            .unwrap(),
        "0\n"
    );
    assert_eq!(fake.node().talos_version, "v1.11.5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grub_with_uki_cmdline_takes_kernel_args_from_the_schematic() {
    let fake = FakeTalos::start(Scenario::grub_uki_cmdline())
        .await
        .unwrap();
    let mut client = machine(&fake, Role::Admin).await;
    let state = get(
        &fake,
        Role::Admin,
        "runtime",
        SECURITY_STATE_TYPE,
        "securitystate",
    )
    .await
    .unwrap();
    assert!(
        !SecurityStateSpec::decode(state.spec.unwrap().proto_spec.as_slice())
            .unwrap()
            .booted_with_uki
    );
    let mut schematic = Scenario::grub_uki_cmdline().schematic;
    schematic
        .customization
        .extra_kernel_args
        .push("amdgpu.cwsr_enable=0".to_owned());
    let id = fake.factory.state.register(schematic);
    client
        .upgrade(to_node(UpgradeRequest {
            image: format!("{}/metal-installer/{id}:v1.12.1", fake.factory.host()),
            ..Default::default()
        }))
        .await
        .unwrap();
    wait_for_down_then_up(&fake, &mut client).await;
    let mut client = machine(&fake, Role::Admin).await;
    assert_eq!(
        read(&mut client, "/sys/module/amdgpu/parameters/cwsr_enable")
            .await
            .unwrap(),
        "0\n"
    );
}
