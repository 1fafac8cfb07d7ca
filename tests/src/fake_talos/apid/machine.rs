//! The fake `machine.MachineService`: version, read, apply (modes, dry run, TRY rollback), upgrade, reboot.

use std::sync::Arc;
use std::time::Duration;

use nodectl_proto::common::Data;
use nodectl_proto::machine::apply_configuration_request::Mode;
use nodectl_proto::machine::machine_service_server::MachineService;
use nodectl_proto::machine::{
    ApplyConfiguration, ApplyConfigurationRequest, ApplyConfigurationResponse, DmesgRequest,
    FeaturesInfo, PlatformInfo, ReadRequest, Reboot, RebootRequest, RebootResponse, Upgrade,
    UpgradeRequest, UpgradeResponse, Version, VersionInfo, VersionResponse,
};
use tonic::{Request, Response, Status};

use crate::fake_talos::node::{
    Config, can_apply_immediate, config_diff, go_duration, parse_installer_image,
};

use super::rbac::{ADMIN, ANY_ROLE, Caller, OPERATOR, invalid, reachable};
use super::{Shared, reboot};

/// The fake `machine.MachineService`.
#[derive(Clone)]
pub struct Machine {
    pub shared: Arc<Shared>,
}

type DataStream = tokio_stream::Iter<std::vec::IntoIter<Result<Data, Status>>>;

fn data_stream(bytes: &[u8], chunk_bytes: usize) -> DataStream {
    let chunks: Vec<Result<Data, Status>> = bytes
        .chunks(chunk_bytes.max(1))
        .map(|chunk| {
            Ok(Data {
                metadata: None,
                bytes: chunk.to_vec(),
            })
        })
        .collect();
    tokio_stream::iter(chunks)
}

impl Machine {
    fn apply(
        &self,
        request: ApplyConfigurationRequest,
    ) -> Result<ApplyConfigurationResponse, Status> {
        let mode = Mode::try_from(request.mode)
            .map_err(|_| Status::invalid_argument("unknown apply mode"))?;
        let mut node = self.shared.node();
        if mode != Mode::Try {
            // Any other apply cancels a pending TRY rollback.
            node.apply_generation += 1;
        }
        let text = String::from_utf8(request.data)
            .map_err(|e| Status::invalid_argument(format!("failed to decode config: {e}")))?;
        let new = Config::parse(&text).map_err(invalid)?;
        let warnings = new.validate(node.booted_with_uki).map_err(invalid)?;
        let (resolved, details, reason) = match mode {
            Mode::Try | Mode::NoReboot => {
                can_apply_immediate(&node.running, &new).map_err(invalid)?;
                (
                    mode,
                    "Applied configuration without a reboot",
                    String::new(),
                )
            }
            Mode::Staged => (
                mode,
                "Staged configuration to be applied after the next reboot",
                String::new(),
            ),
            Mode::Auto => match can_apply_immediate(&node.running, &new) {
                Ok(()) => (
                    Mode::NoReboot,
                    "Applied configuration without a reboot",
                    String::new(),
                ),
                Err(refusal) => (
                    Mode::Reboot,
                    "Applied configuration with a reboot",
                    format!(": {}", refusal.0),
                ),
            },
            Mode::Reboot => (mode, "Applied configuration with a reboot", String::new()),
        };
        let mut details_text = details.to_owned();
        if request.dry_run {
            let mut diff = config_diff(&node.running.text, &new.text);
            if diff.is_empty() {
                diff = "No changes.".to_owned();
            }
            return Ok(ApplyConfigurationResponse {
                messages: vec![ApplyConfiguration {
                    metadata: None,
                    warnings: Vec::new(),
                    mode: resolved.into(),
                    mode_details: format!(
                        "Dry run summary:\n{details} (skipped in dry-run).\nConfig diff:\n\n{diff}"
                    ),
                }],
            });
        }
        match resolved {
            Mode::Try => {
                let timeout = request
                    .try_mode_timeout
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or(Duration::from_secs(60));
                details_text.push_str(&format!(
                    "\nThe config is applied in 'try' mode and will be automatically reverted back in {}",
                    go_duration(timeout)
                ));
                node.apply_generation += 1;
                node.try_pending = true;
                node.running = new;
                let generation = node.apply_generation;
                let shared = Arc::clone(&self.shared);
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let mut node = shared.node();
                    if node.try_pending && node.apply_generation == generation {
                        node.running = node.persistent.clone();
                        node.try_pending = false;
                    }
                });
            }
            Mode::NoReboot => {
                node.try_pending = false;
                node.persistent = new.clone();
                node.running = new;
            }
            Mode::Staged => {
                node.persistent = new;
            }
            Mode::Reboot | Mode::Auto => {
                node.persistent = new;
                drop(node);
                reboot(&self.shared, None);
            }
        }
        Ok(ApplyConfigurationResponse {
            messages: vec![ApplyConfiguration {
                metadata: None,
                warnings,
                mode: resolved.into(),
                mode_details: format!("{details_text}{reason}"),
            }],
        })
    }

    fn upgrade(&self, image: &str) -> Result<UpgradeResponse, Status> {
        let pull_error = |why: &str| {
            Status::unknown(format!("error validating installer image {image:?}: {why}"))
        };
        let (host, id, version) =
            parse_installer_image(image).ok_or_else(|| pull_error("invalid reference"))?;
        if host != self.shared.factory_host {
            return Err(pull_error(&format!(
                "failed to pull: dial tcp: lookup {host}: no such host"
            )));
        }
        let schematic = self
            .shared
            .factory
            .schematic(&id)
            .ok_or_else(|| pull_error(&format!("failed to pull: {image}: not found")))?;
        reboot(&self.shared, Some((id, schematic, version)));
        Ok(UpgradeResponse {
            messages: vec![Upgrade {
                metadata: None,
                ack: "Upgrade request received".to_owned(),
                actor_id: actor_id(),
            }],
        })
    }
}

fn actor_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "00000000-0000-4000-8000-{:012x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[tonic::async_trait]
impl MachineService for Machine {
    async fn apply_configuration(
        &self,
        request: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let mut call = caller.call("ApplyConfiguration");
        call.mode = Mode::try_from(request.mode).ok();
        call.dry_run = request.dry_run;
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(ADMIN))
            .and_then(|()| self.apply(request));
        self.shared.record(call, &result);
        result.map(Response::new)
    }

    type DmesgStream = DataStream;

    async fn dmesg(&self, request: Request<DmesgRequest>) -> Result<Response<DataStream>, Status> {
        let caller = Caller::of(&request);
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(ANY_ROLE))
            .map(|()| {
                let lines = [
                    "kern:    info: [2026-01-06T19:44:34.377086477Z]: [drm] amdgpu kernel modesetting enabled.",
                    "kern:    info: [2026-01-06T19:44:34.501203112Z]: amdgpu 0000:c5:00.0: amdgpu: detected ip block number 0 <soc21_common>",
                ];
                let messages: Vec<Result<Data, Status>> = lines
                    .iter()
                    .map(|l| {
                        Ok(Data {
                            metadata: None,
                            bytes: l.as_bytes().to_vec(),
                        })
                    })
                    .collect();
                tokio_stream::iter(messages)
            });
        self.shared.record(caller.call("Dmesg"), &result);
        result.map(Response::new)
    }

    type ReadStream = DataStream;

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<DataStream>, Status> {
        let caller = Caller::of(&request);
        let path = request.into_inner().path;
        let mut call = caller.call("Read");
        call.target = Some(path.clone());
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(ADMIN))
            .and_then(|()| {
                let node = self.shared.node();
                let content = match path.as_str() {
                    "/proc/cmdline" => format!("{}\n", node.cmdline),
                    "/proc" | "/sys/module/amdgpu/parameters" => {
                        return Err(Status::unknown("path must be a regular file"));
                    }
                    parameter
                        if let Some(value) = parameter
                            .strip_prefix("/sys/module/amdgpu/parameters/")
                            .and_then(|name| {
                                crate::fake_talos::node::amdgpu_parameter(&node.cmdline, name)
                            }) =>
                    {
                        format!("{value}\n")
                    }
                    _ => {
                        return Err(Status::not_found(format!(
                            "stat {path}: no such file or directory"
                        )));
                    }
                };
                // Small chunks, so a client must join them.
                Ok(data_stream(content.as_bytes(), 16))
            });
        self.shared.record(call, &result);
        result.map(Response::new)
    }

    async fn version(&self, request: Request<()>) -> Result<Response<VersionResponse>, Status> {
        let caller = Caller::of(&request);
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(ANY_ROLE))
            .map(|()| {
                let node = self.shared.node();
                VersionResponse {
                    messages: vec![Version {
                        metadata: None,
                        version: Some(VersionInfo {
                            tag: node.talos_version.clone(),
                            sha: "0123abcd".to_owned(),
                            built: String::new(),
                            go_version: "go1.25.5".to_owned(),
                            os: "linux".to_owned(),
                            arch: "amd64".to_owned(),
                        }),
                        platform: Some(PlatformInfo {
                            name: "metal".to_owned(),
                            mode: "metal".to_owned(),
                        }),
                        features: Some(FeaturesInfo { rbac: true }),
                    }],
                }
            });
        self.shared.record(caller.call("Version"), &result);
        result.map(Response::new)
    }

    async fn upgrade(
        &self,
        request: Request<UpgradeRequest>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        let caller = Caller::of(&request);
        let image = request.into_inner().image;
        let mut call = caller.call("Upgrade");
        call.image = Some(image.clone());
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(ADMIN))
            .and_then(|()| self.upgrade(&image));
        self.shared.record(call, &result);
        result.map(Response::new)
    }

    async fn reboot(
        &self,
        request: Request<RebootRequest>,
    ) -> Result<Response<RebootResponse>, Status> {
        let caller = Caller::of(&request);
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(OPERATOR))
            .map(|()| {
                reboot(&self.shared, None);
                RebootResponse {
                    messages: vec![Reboot {
                        metadata: None,
                        actor_id: actor_id(),
                    }],
                }
            });
        self.shared.record(caller.call("Reboot"), &result);
        result.map(Response::new)
    }
}
