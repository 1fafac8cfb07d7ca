//! deploy/: every manifest validates against the Kubernetes 1.37 schema (strict), the base and the example overlay render with kubectl kustomize, and the DaemonSet asks of the agent only flags it has, within the footprint the README promises.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use nodectl_e2e::harness::{binary, outside_program_missing, workspace_root};
use serde_json::Value;

/// kubectl and kubernetes-validate as `.ci/install-deps` installed them, or `None` (failing
/// under CI).
fn tools() -> Option<(PathBuf, PathBuf)> {
    let kubectl = std::env::var_os("NODECTL_KUBECTL").map(PathBuf::from);
    let validate = std::env::var_os("NODECTL_KUBERNETES_VALIDATE").map(PathBuf::from);
    match (kubectl, validate) {
        (Some(k), Some(v)) if k.is_file() && v.is_file() => Some((k, v)),
        _ => {
            outside_program_missing(
                "kubectl and kubernetes-validate (NODECTL_KUBECTL, NODECTL_KUBERNETES_VALIDATE)",
            );
            None
        }
    }
}

fn run(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} {}: {}\n{}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Every YAML file under deploy/, kustomizations aside (they are kustomize's, not the API's).
fn manifests() -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut dirs = vec![workspace_root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && path.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                found.push(path.to_str().context("path")?.to_owned());
            }
        }
    }
    found.sort();
    Ok(found)
}

fn rendered(kubectl: &Path, validate: &Path, dir: &str) -> anyhow::Result<Vec<Value>> {
    let text = run(kubectl, &["kustomize", dir])?;
    let out = tempfile::NamedTempFile::new()?;
    std::fs::write(out.path(), &text)?;
    run(
        validate,
        &["--strict", "--quiet", out.path().to_str().context("path")?],
    )?;
    Ok(serde_saphyr::from_multiple(&text)?)
}

fn daemonset(documents: &[Value]) -> anyhow::Result<&Value> {
    documents
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .context("no DaemonSet rendered")
}

#[test]
fn every_manifest_validates_and_the_overlay_renders() -> anyhow::Result<()> {
    let Some((kubectl, validate)) = tools() else {
        return Ok(());
    };
    let files = manifests()?;
    assert!(files.len() >= 6, "{files:?}");
    let mut args = vec!["--strict", "--quiet"];
    args.extend(files.iter().map(String::as_str));
    run(&validate, &args)?;

    let base = rendered(&kubectl, &validate, "deploy/base")?;
    let overlay = rendered(&kubectl, &validate, "deploy/overlays/example")?;
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Service",
    ] {
        assert!(
            base.iter().any(|d| d["kind"] == kind),
            "no {kind} in the base"
        );
    }
    let namespace = base
        .iter()
        .find(|d| d["kind"] == "Namespace")
        .context("ns")?;
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let service = base
        .iter()
        .find(|d| d["kind"] == "Service")
        .context("svc")?;
    assert_eq!(service["spec"]["clusterIP"], "None", "a headless Service");

    // The overlay's own label and image.
    let ds = daemonset(&overlay)?;
    let term = &ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0];
    assert_eq!(
        term["matchExpressions"][0]["key"],
        "node.kubernetes.io/amd-gpu"
    );
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nodectl/nodectl-agent:0.1.0");
    Ok(())
}

#[test]
fn the_daemonset_asks_only_for_flags_the_agent_has_within_the_promised_footprint()
-> anyhow::Result<()> {
    let Some((kubectl, validate)) = tools() else {
        return Ok(());
    };
    let base = rendered(&kubectl, &validate, "deploy/base")?;
    let pod = &daemonset(&base)?["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let help = run(&binary("nodectl-agent")?, &["--help"])?;
    let args = container["args"].as_array().context("args")?;
    for arg in args {
        let flag = arg
            .as_str()
            .and_then(|a| a.split('=').next())
            .context("an argument that is not a string")?;
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "the DaemonSet passes {flag}, which nodectl-agent does not take"
        );
    }
    let resources = &container["resources"];
    assert_eq!(resources["requests"]["cpu"], "10m");
    assert_eq!(resources["requests"]["memory"], "16Mi");
    let limit = resources["limits"]["memory"]
        .as_str()
        .context("memory limit")?;
    let limit_mib: u64 = limit.trim_end_matches("Mi").parse()?;
    assert!(limit_mib <= 64, "{limit}");
    // The kubelet's gRPC probes, on the port the agent serves grpc.health.v1 on.
    let health_port = args
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--health-listen="))
        .and_then(|addr| addr.rsplit(':').next())
        .context("--health-listen")?
        .parse::<u64>()?;
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["grpc"]["port"], health_port, "{probe}");
    }
    assert_eq!(
        container["readinessProbe"]["grpc"]["service"],
        "nodectl.v1.NodeDiagnostics"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let mounts = container["volumeMounts"].as_array().context("mounts")?;
    let host = mounts
        .iter()
        .find(|m| m["mountPath"] == "/host")
        .context("the host root")?;
    assert_eq!(host["readOnly"], true);
    for path in ["/host/dev", "/host/var/log/pods", "/host/sys/kernel/debug"] {
        assert!(
            mounts.iter().any(|m| m["mountPath"] == path),
            "{path} is not mounted"
        );
    }
    // The agent reads the host through that mount.
    assert!(args.iter().any(|a| a == "--host-root=/host"));
    Ok(())
}
