//! A chorus set of member processes on this machine, on free loopback ports, for the
//! tools that kill, pause and partition members (chorus-failover, chorus-jepsen).
//! Every process is killed when its [`Member`] is dropped, however the tool ends.
//!
//! The members may instead run in Docker containers of the chorus image ([`Docker`]):
//! the same command lines on the host's network (so that the members, the client crate
//! and the checker reach each other at the same loopback addresses), with the data
//! directory mounted from the host; a kill is `docker kill`, a pause `docker pause`, a
//! restart `docker start`. Each container is removed when its member is dropped.

use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where members run: as processes of this machine, or in containers.
#[derive(Clone, Debug)]
pub enum Runner {
    Process,
    Docker(Docker),
}

/// Members in containers of `image` (which holds master-node and secondary-node on
/// its PATH), labelled `chorus.test=<label>` so that a script can remove whatever is
/// left by label.
#[derive(Clone, Debug)]
pub struct Docker {
    pub image: String,
    pub label: String,
}

/// One member process, restartable with the same flags and data.
pub struct Member {
    pub name: String,
    /// Its HTTP address, `127.0.0.1:port`.
    pub http: String,
    pub data_dir: PathBuf,
    binary: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// With libfaketime: the library, and the file holding this member's wall-clock
    /// offset.
    clock: Option<(PathBuf, PathBuf)>,
    /// In a container: how to run it, its id once created, and whether it runs.
    docker: Option<(Docker, Option<String>, bool)>,
}

/// `docker args...`: its output, or why it failed.
fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("run docker")?;
    if !out.status.success() {
        anyhow::bail!(
            "docker {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Member {
    pub fn start(&mut self) -> Result<()> {
        if let Some((how, id, running)) = &mut self.docker {
            match id {
                Some(id) => {
                    docker(&["start", id])?;
                }
                None => {
                    let binary = self
                        .binary
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("master-node");
                    let label = format!("chorus.test={}", how.label);
                    let name = format!("{}-{}", how.label, self.name);
                    let mount = format!("{}:{}", self.data_dir.display(), self.data_dir.display());
                    let mut args = vec![
                        "run",
                        "-d",
                        "--network",
                        "host",
                        "--label",
                        &label,
                        "--name",
                        &name,
                        "-v",
                        &mount,
                        &how.image,
                        binary,
                    ];
                    args.extend(self.args.iter().map(String::as_str));
                    *id = Some(docker(&args)?);
                }
            }
            *running = true;
            self.paused = false;
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.binary);
        if let Some((lib, file)) = &self.clock {
            // The wall clock the process reads is shifted by the offset in `file`, read
            // again at most once a second. Not the monotonic clock: libfaketime 0.9.10
            // (Debian 12) then breaks timed waits on condition variables, which hang
            // for ever (docs/faults.md).
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", file)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = cmd
            .args(&self.args)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// SIGKILL, then reap it.
    pub fn kill(&mut self) {
        if let Some((_, Some(id), running)) = &mut self.docker {
            // Already gone after a power loss: nothing to do then.
            let _ = docker(&["kill", "-s", "KILL", id]);
            *running = false;
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    pub fn is_running(&self) -> bool {
        match &self.docker {
            Some((_, _, running)) => *running,
            None => self.child.is_some(),
        }
    }

    /// Stopped by [`Self::pause`] and not resumed yet.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// SIGSTOP (`docker pause`): the process stays, its sockets stay open, it answers
    /// nothing.
    pub fn pause(&mut self) {
        if let Some((_, Some(id), true)) = &self.docker {
            self.paused = docker(&["pause", id]).is_ok();
            return;
        }
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGSTOP);
            self.paused = true;
        }
    }

    /// Whether its clocks can be moved ([`members`] was given libfaketime).
    pub fn has_clock(&self) -> bool {
        self.clock.is_some()
    }

    /// Move this member's wall clock `secs` seconds from the true time (0: back to
    /// it); it notices within a second. False without libfaketime.
    pub fn set_clock(&self, secs: i64) -> Result<bool> {
        let Some((_, file)) = &self.clock else {
            return Ok(false);
        };
        std::fs::write(file, format!("{secs:+}\n"))
            .with_context(|| format!("write {}", file.display()))?;
        Ok(true)
    }

    /// SIGCONT (`docker unpause`) after [`Self::pause`].
    pub fn resume(&mut self) {
        if let Some((_, Some(id), _)) = &self.docker
            && self.paused
        {
            let _ = docker(&["unpause", id]);
        }
        if let Some(c) = &self.child
            && self.paused
        {
            signal(c.id(), libc::SIGCONT);
        }
        self.paused = false;
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child this process spawned and has not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        if let Some((_, Some(id), _)) = &self.docker {
            // Its output into the member's log, then the container goes.
            if let Ok(out) = Command::new("docker").args(["logs", id]).output() {
                let mut all = out.stdout;
                all.extend_from_slice(&out.stderr);
                let _ = std::fs::write(&self.log, all);
            }
            let _ = docker(&["rm", "-f", "-v", id]);
        }
    }
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Where Debian's libfaketime (package `libfaketime`) puts the library that moves a
/// process's clocks; its multi-threaded variant, as a member reads clocks on several
/// threads.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The members `names` in `work`: the first runs `master-node` (and starts the set), the
/// others `secondary-node` joining through it. `extra` is added to every command line.
/// With `faketime` (the library), each member runs under it, its wall clock at the
/// true time until [`Member::set_clock`] (not in containers). Nothing is started yet.
pub fn members(
    runner: &Runner,
    bin_dir: &Path,
    work: &Path,
    names: &[&str],
    extra: &[String],
    faketime: Option<&Path>,
) -> Result<Vec<Member>> {
    let faketime = faketime.filter(|_| matches!(runner, Runner::Process));
    let mut out = Vec::new();
    let master_comm = free_port()?;
    for (i, name) in names.iter().enumerate() {
        let http = free_port()?;
        let comm = if i == 0 { master_comm } else { free_port()? };
        let data_dir = work.join(name);
        let mut args: Vec<String> = [
            "--name",
            name,
            "--http-port",
            &http.to_string(),
            "--comm-port",
            &comm.to_string(),
            "--data-dir",
            data_dir.to_str().unwrap_or_default(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let binary = if i == 0 {
            bin_dir.join("master-node")
        } else {
            args.extend([
                "--master-ip".into(),
                "127.0.0.1".into(),
                "--master-comm-port".into(),
                master_comm.to_string(),
            ]);
            bin_dir.join("secondary-node")
        };
        out.push(Member {
            name: name.to_string(),
            http: format!("127.0.0.1:{http}"),
            data_dir,
            binary,
            args,
            log: work.join(format!("{name}.log")),
            child: None,
            paused: false,
            docker: match runner {
                Runner::Process => None,
                Runner::Docker(d) => {
                    // The image's user writes it; the host reads its rollback files.
                    let dir = work.join(name);
                    std::fs::create_dir_all(&dir)?;
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
                    Some((d.clone(), None, false))
                }
            },
            clock: match faketime {
                Some(lib) => {
                    let file = work.join(format!("{name}.clock"));
                    std::fs::create_dir_all(work)?;
                    std::fs::write(&file, "+0\n")?;
                    Some((lib.to_path_buf(), file))
                }
                None => None,
            },
        });
    }
    Ok(out)
}

/// Plain HTTP to the members, outside the client crate (final logs, checksums, faults).
pub struct Admin {
    http: awc::Client,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            http: awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish(),
        }
    }
}

impl Admin {
    pub async fn get(&self, addr: &str, path: &str) -> Result<(u16, Value)> {
        let mut resp = self
            .http
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .map_err(|e| anyhow!("GET {addr}{path}: {e}"))?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().limit(1 << 30).await?;
        Ok((status, v))
    }

    pub async fn send(&self, method: &str, addr: &str, path: &str, body: &Value) -> Result<u16> {
        let req = match method {
            "PUT" => self.http.put(format!("http://{addr}{path}")),
            "DELETE" => self.http.delete(format!("http://{addr}{path}")),
            _ => self.http.post(format!("http://{addr}{path}")),
        };
        let resp = req
            .send_json(body)
            .await
            .map_err(|e| anyhow!("{method} {addr}{path}: {e}"))?;
        Ok(resp.status().as_u16())
    }

    /// The whole log of one member, `(id, message)` in id order.
    pub async fn log(&self, addr: &str) -> Result<Vec<(u64, String)>> {
        let (status, v) = self.get(addr, "/messages").await?;
        anyhow::ensure!(status == 200, "GET {addr}/messages: {status}");
        Ok(v.as_array()
            .ok_or_else(|| anyhow!("GET {addr}/messages: not an array"))?
            .iter()
            .map(|e| {
                (
                    e["id"].as_u64().unwrap_or(0),
                    e["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// Wait until every member (by HTTP address) holds the same log (same length, equal
    /// `GET /checksum`), for at most `within`. Returns the common log (the first member's when they never
    /// agreed), whether they agreed, and how long it took.
    pub async fn converge(
        &self,
        set: &[String],
        within: Duration,
    ) -> (Vec<(u64, String)>, bool, Duration) {
        let started = Instant::now();
        loop {
            let mut logs = Vec::new();
            for m in set {
                logs.push(self.log(m).await.ok());
            }
            let lens: Vec<Option<usize>> = logs.iter().map(|l| l.as_ref().map(Vec::len)).collect();
            let n = lens.iter().flatten().copied().max().unwrap_or(0);
            if lens.iter().all(|l| *l == Some(n)) {
                let mut sums = Vec::new();
                for m in set {
                    sums.push(
                        self.get(m, &format!("/checksum?upTo={n}"))
                            .await
                            .ok()
                            .filter(|(s, _)| *s == 200)
                            .map(|(_, v)| v["checksum"].clone()),
                    );
                }
                if sums.windows(2).all(|w| w[0].is_some() && w[0] == w[1]) {
                    let log = logs.swap_remove(0).unwrap_or_default();
                    return (log, true, started.elapsed());
                }
            }
            if started.elapsed() > within {
                let log = logs.into_iter().flatten().next().unwrap_or_default();
                return (log, false, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `p` in 0..=1 of an ascending list (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}
