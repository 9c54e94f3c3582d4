//! A chorus cluster in Docker containers on a private network, driven through the docker
//! CLI. Everything it creates carries the label `chorus.test=<project>` and is removed
//! when the cluster is dropped, also when a test fails.

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::process::Command;

/// The suite's own image (`scripts/cluster-suite.sh` builds it with debug binaries), so
/// that it never replaces the `chorus:latest` a user built; `CHORUS_IMAGE` names another.
pub fn image() -> String {
    std::env::var("CHORUS_IMAGE").unwrap_or_else(|_| "chorus:fault-suite".into())
}

/// Run `docker args...`; stdout on success.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("run docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Why the suite cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if docker(&["info", "--format", "{{.ServerVersion}}"]).is_err() {
        return Some("no Docker engine reachable".into());
    }
    let image = image();
    if docker(&["image", "inspect", &image]).is_err() {
        return Some(format!(
            "image {image} missing: run scripts/cluster-suite.sh (it builds it)"
        ));
    }
    None
}

pub struct Container {
    pub name: String,
    pub id: String,
}

pub struct DockerCluster {
    pub project: String,
    pub network: String,
    pub master: Container,
    pub secondaries: Vec<Container>,
}

impl DockerCluster {
    /// Start a master and `n` secondaries (`s1`..), every node with the given extra
    /// flags (any of them may be elected master). Each advertises its network alias and
    /// listens on comm port 4000, so the others reach it whatever its role.
    pub fn start(n: usize, flags: &[&str]) -> Result<Self> {
        // scripts/cluster-suite.sh names the project so that it can clean up after us
        // even if this process is killed before its Drop runs.
        let project = std::env::var("CHORUS_FAULT_PROJECT")
            .unwrap_or_else(|_| format!("chorus-fault-{}", std::process::id()));
        let label = format!("chorus.test={project}");
        let network = docker(&["network", "create", "--label", &label, &project])?;
        let mut cluster = DockerCluster {
            project: project.clone(),
            network,
            master: Container {
                name: String::new(),
                id: String::new(),
            },
            secondaries: Vec::new(),
        };
        let mut master_cmd = vec![
            "master-node",
            "--name",
            "master",
            "--http-port",
            "8080",
            "--comm-port",
            "4000",
            "--host",
            "0.0.0.0",
            "--advertise-host",
            "master",
        ];
        master_cmd.extend_from_slice(flags);
        cluster.master = cluster.run("master", &master_cmd)?;
        for i in 1..=n {
            let name = format!("s{i}");
            let mut cmd = vec![
                "secondary-node",
                "--name",
                &name,
                "--http-port",
                "8080",
                "--comm-port",
                "4000",
                "--host",
                "0.0.0.0",
                "--advertise-host",
                &name,
                "--master-ip",
                "master",
                "--master-comm-port",
                "4000",
            ];
            cmd.extend_from_slice(flags);
            let c = cluster.run(&name, &cmd)?;
            cluster.secondaries.push(c);
        }
        Ok(cluster)
    }

    fn run(&self, alias: &str, cmd: &[&str]) -> Result<Container> {
        let label = format!("chorus.test={}", self.project);
        let name = format!("{}-{alias}", self.project);
        let volume = format!("{name}-data");
        docker(&["volume", "create", "--label", &label, &volume])?;
        let mount = format!("{volume}:/var/lib/chorus");
        let image = image();
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &label,
            "--network",
            &self.network,
            "--network-alias",
            alias,
            "-p",
            "127.0.0.1::8080",
            "-v",
            &mount,
            "-e",
            "RUST_LOG=info",
            &image,
        ];
        args.extend_from_slice(cmd);
        let id = docker(&args)?;
        Ok(Container { name, id })
    }

    /// All nodes, master first.
    pub fn all(&self) -> Vec<&Container> {
        std::iter::once(&self.master)
            .chain(self.secondaries.iter())
            .collect()
    }

    /// Where the host reaches a container's HTTP port now (it may change on restart).
    pub fn http(&self, c: &Container) -> Result<SocketAddr> {
        let line = docker(&["port", &c.id, "8080/tcp"])?;
        let first = line.lines().next().unwrap_or_default();
        first
            .parse()
            .with_context(|| format!("docker port said {line:?}"))
    }

    pub fn kill9(&self, c: &Container) -> Result<()> {
        docker(&["kill", "-s", "KILL", &c.id]).map(|_| ())
    }

    pub fn start_again(&self, c: &Container) -> Result<()> {
        docker(&["start", &c.id]).map(|_| ())
    }

    /// Cut `c` off the private network (from every other node).
    pub fn disconnect(&self, c: &Container) -> Result<()> {
        docker(&["network", "disconnect", &self.network, &c.id]).map(|_| ())
    }

    pub fn reconnect(&self, c: &Container, alias: &str) -> Result<()> {
        docker(&["network", "connect", "--alias", alias, &self.network, &c.id]).map(|_| ())
    }

    pub fn pause(&self, c: &Container) -> Result<()> {
        docker(&["pause", &c.id]).map(|_| ())
    }

    pub fn unpause(&self, c: &Container) -> Result<()> {
        docker(&["unpause", &c.id]).map(|_| ())
    }

    pub fn logs(&self, c: &Container, tail: usize) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", &tail.to_string(), &c.id])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        let filter = format!("label=chorus.test={}", self.project);
        if std::thread::panicking() {
            for c in self.all() {
                eprintln!("--- last log lines of {} ---\n{}", c.name, self.logs(c, 15));
            }
        }
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
            for id in ids.lines() {
                let _ = docker(&["rm", "-f", "-v", id]);
            }
        }
        let _ = docker(&["network", "rm", &self.network]);
        if let Ok(vols) = docker(&["volume", "ls", "-q", "--filter", &filter]) {
            for v in vols.lines() {
                let _ = docker(&["volume", "rm", "-f", v]);
            }
        }
    }
}
