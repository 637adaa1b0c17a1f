//! Runs the board's upgrade hook (`[hooks] upgrade`, the seed's `upgrade.sh`) for the event
//! loop without blocking it: one call at a time, in the order the calls came, each in a tokio
//! task of its own that logs the script's output line by line as `upgrade.sh: ...` and reports
//! its end on a channel the loop selects on.
//!
//! The script gets one argument, the stage (`PRECHECK`, ...), and its facts in the
//! environment ([`HookEnv`]). It runs in a process group of its own, with stdin from
//! /dev/null and stdout and stderr into one pipe (their lines in the order it wrote them). At
//! its timeout the whole group is killed (SIGKILL) and the call counts as failed.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use log::{info, warn};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::wtp::{HookCall, HookStage};

/// How long the script's output is still read after it exited (a child it left in the
/// background may hold the pipe open).
const DRAIN: Duration = Duration::from_millis(200);

/// The environment of one call, besides `WTPD_STAGE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookEnv {
    pub vars: Vec<(&'static str, String)>,
}

impl HookEnv {
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.vars.push((name, value.into()));
    }
}

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResult {
    pub stage: HookStage,
    /// `Err(why)`: non-zero exit, a signal, the timeout, or the script could not be started.
    pub outcome: Result<(), String>,
}

/// The queue of calls and the one running.
pub struct Hooks {
    script: Option<PathBuf>,
    timeout: Duration,
    queue: VecDeque<(HookStage, HookEnv)>,
    running: Option<HookStage>,
    done_tx: mpsc::UnboundedSender<HookResult>,
    done_rx: mpsc::UnboundedReceiver<HookResult>,
}

impl Hooks {
    pub fn new(script: Option<PathBuf>, timeout: Duration) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Hooks {
            script,
            timeout,
            queue: VecDeque::new(),
            running: None,
            done_tx,
            done_rx,
        }
    }

    pub fn configured(&self) -> bool {
        self.script.is_some()
    }

    /// Queues a call (nothing without a script); starts it when none runs.
    pub fn call(&mut self, stage: HookStage, env: HookEnv) {
        if self.script.is_none() {
            return;
        }
        self.queue.push_back((stage, env));
        self.start_next();
    }

    /// A call that holds the agent's next action up is queued or running
    /// ([`HookStage::holds_actions`]).
    pub fn holding(&self) -> bool {
        self.running.is_some_and(HookStage::holds_actions)
            || self.queue.iter().any(|(s, _)| s.holds_actions())
    }

    pub fn idle(&self) -> bool {
        self.running.is_none() && self.queue.is_empty()
    }

    /// The end of the running call; pending forever when none runs. Cancel-safe (for
    /// `select!`). The next queued call starts before this returns.
    pub async fn next_done(&mut self) -> HookResult {
        let r = match self.done_rx.recv().await {
            Some(r) => r,
            // The sender lives in `self`: the channel never closes.
            None => std::future::pending().await,
        };
        self.running = None;
        self.start_next();
        r
    }

    /// Waits for every queued call (each bounded by the timeout): before the agent exits or
    /// reboots, so that ACTIVATE and ABORT have run.
    pub async fn drain(&mut self) -> Vec<HookResult> {
        let mut all = Vec::new();
        while !self.idle() {
            all.push(self.next_done().await);
        }
        all
    }

    fn start_next(&mut self) {
        if self.running.is_some() {
            return;
        }
        let (Some(script), Some((stage, env))) = (self.script.clone(), self.queue.pop_front())
        else {
            return;
        };
        self.running = Some(stage);
        let tx = self.done_tx.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let outcome = run(&script, stage, &env, timeout).await;
            if let Err(why) = &outcome {
                warn!("{why}");
            }
            let _ = tx.send(HookResult { stage, outcome });
        });
    }
}

/// The environment a call gets: what the WTP core said of it plus the board's facts.
pub fn env_for(call: &HookCall, board: &BoardFacts) -> HookEnv {
    let mut env = HookEnv::default();
    env.set("WTPD_VERSION", call.version.clone().unwrap_or_default());
    let image = std::path::absolute(&call.location)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| call.location.clone());
    env.set("WTPD_IMAGE", image);
    env.set("WTPD_PREDOWNLOAD", if call.predownload { "1" } else { "0" });
    env.set("WTPD_REASON", call.reason.clone().unwrap_or_default());
    board.add_to(&mut env);
    env
}

/// What the runtime knows of the board for the script's environment.
#[derive(Debug, Clone, Default)]
pub struct BoardFacts {
    pub running_version: String,
    pub image_type: String,
    pub board: String,
    pub slot_booted: String,
    pub slot_target: String,
    pub download_dir: String,
    pub required_kib: u64,
}

impl BoardFacts {
    pub fn add_to(&self, env: &mut HookEnv) {
        env.set("WTPD_RUNNING_VERSION", self.running_version.clone());
        env.set("WTPD_IMAGE_TYPE", self.image_type.clone());
        env.set("WTPD_BOARD", self.board.clone());
        env.set("WTPD_SLOT_BOOTED", self.slot_booted.clone());
        env.set("WTPD_SLOT_TARGET", self.slot_target.clone());
        env.set("WTPD_DOWNLOAD_DIR", self.download_dir.clone());
        env.set("WTPD_REQUIRED_KIB", self.required_kib.to_string());
    }
}

/// The name the script's lines are logged under: its file name (`upgrade.sh`).
fn label(script: &Path) -> String {
    script
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| script.display().to_string())
}

/// Runs one call to its end or its timeout.
pub async fn run(
    script: &Path,
    stage: HookStage,
    env: &HookEnv,
    timeout: Duration,
) -> Result<(), String> {
    let name = label(script);
    let what = format!("{name} {}", stage.arg());
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("{what}: pipe: {e}"))?;
    let write_err: OwnedFd = write_end
        .try_clone()
        .map_err(|e| format!("{what}: pipe: {e}"))?;
    let mut cmd = tokio::process::Command::new(script);
    for v in super::notify::ENV_VARS {
        // systemd's notifications are the agent's, not the script's.
        cmd.env_remove(v);
    }
    cmd.arg(stage.arg())
        .env("WTPD_STAGE", stage.arg())
        .envs(env.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::from(write_err))
        .process_group(0)
        .kill_on_drop(true);
    let spawned = cmd.spawn();
    // Our copies of the pipe's write end go with the Command: EOF comes when the script's go.
    drop(cmd);
    let mut child = spawned.map_err(|e| format!("{what}: cannot run {}: {e}", script.display()))?;
    let pid = child.id();
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)
        .map_err(|e| format!("{what}: pipe: {e}"))?;
    let mut lines = BufReader::new(reader).lines();
    let mut last_line: Option<String> = None;
    let log_line = |line: String, last: &mut Option<String>| {
        info!("{name}: {line}");
        if !line.trim().is_empty() {
            *last = Some(line.trim().to_string());
        }
    };
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut eof = false;
    let status = loop {
        tokio::select! {
            l = lines.next_line(), if !eof => match l {
                Ok(Some(line)) => log_line(line, &mut last_line),
                _ => eof = true,
            },
            s = child.wait() => break Some(s),
            _ = &mut deadline => break None,
        }
    };
    let Some(status) = status else {
        if let Some(pid) = pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.wait().await;
        return Err(format!(
            "{what}: timed out after {}s: its process group was killed",
            timeout.as_secs_f64()
        ));
    };
    // What it wrote just before it exited.
    let drain = tokio::time::sleep(DRAIN);
    tokio::pin!(drain);
    while !eof {
        tokio::select! {
            l = lines.next_line() => match l {
                Ok(Some(line)) => log_line(line, &mut last_line),
                _ => eof = true,
            },
            _ = &mut drain => break,
        }
    }
    let status = status.map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let how = match status.code() {
        Some(c) => format!("exit status {c}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            format!("killed by signal {}", status.signal().unwrap_or(0))
        }
    };
    Err(match last_line {
        Some(l) => format!("{what} failed ({how}): {l}"),
        None => format!("{what} failed ({how})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wtpd-hooks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_call_gets_its_stage_and_environment_and_its_exit_decides() {
        let dir = tmp("env");
        let out = dir.join("out");
        let s = script(
            &dir,
            "upgrade.sh",
            &format!(
                "echo \"$# $1 $WTPD_STAGE $WTPD_VERSION\" > {}\necho to stdout\necho to stderr >&2\n[ \"$1\" = PRECHECK ] && {{ echo 'no room for it'; exit 3; }}\nexit 0\n",
                out.display()
            ),
        );
        let mut env = HookEnv::default();
        env.set("WTPD_VERSION", "17.9.4.27");
        let rt = rt();
        let r = rt.block_on(run(
            &s,
            HookStage::Predownload,
            &env,
            Duration::from_secs(10),
        ));
        assert_eq!(r, Ok(()));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "1 PREDOWNLOAD PREDOWNLOAD 17.9.4.27\n"
        );
        let r = rt.block_on(run(&s, HookStage::Precheck, &env, Duration::from_secs(10)));
        assert_eq!(
            r,
            Err("upgrade.sh PRECHECK failed (exit status 3): no room for it".into())
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_timeout_kills_the_whole_process_group() {
        let dir = tmp("timeout");
        let pidfile = dir.join("child.pid");
        let s = script(
            &dir,
            "upgrade.sh",
            &format!("sleep 60 &\necho $! > {}\nwait\n", pidfile.display()),
        );
        let t = std::time::Instant::now();
        let r = rt().block_on(run(
            &s,
            HookStage::Precheck,
            &HookEnv::default(),
            Duration::from_millis(500),
        ));
        assert!(t.elapsed() < Duration::from_secs(10));
        let e = r.unwrap_err();
        assert!(e.contains("timed out after 0.5s"), "{e}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep was in the script's group: it is gone too (or a zombie of
        // init's for a moment).
        let gone = (0..50).any(|_| {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false);
            if alive {
                std::thread::sleep(Duration::from_millis(20));
            }
            !alive
        });
        assert!(gone, "the script's child {pid} survived the timeout");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn calls_run_one_at_a_time_in_order_and_a_missing_script_fails() {
        let dir = tmp("order");
        let out = dir.join("out");
        let s = script(
            &dir,
            "upgrade.sh",
            &format!(
                "[ \"$1\" = PRECHECK ] && sleep 0.3\necho \"$1\" >> {}\n",
                out.display()
            ),
        );
        let rt = rt();
        let results = rt.block_on(async {
            let mut h = Hooks::new(Some(s.clone()), Duration::from_secs(10));
            h.call(HookStage::Precheck, HookEnv::default());
            h.call(HookStage::Abort, HookEnv::default());
            assert!(!h.holding(), "PRECHECK and ABORT hold nothing up");
            h.call(HookStage::Upgrade, HookEnv::default());
            assert!(h.holding());
            h.drain().await
        });
        let stages: Vec<_> = results.iter().map(|r| r.stage).collect();
        assert_eq!(
            stages,
            [HookStage::Precheck, HookStage::Abort, HookStage::Upgrade]
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "PRECHECK\nABORT\nUPGRADE\n"
        );
        let missing = rt.block_on(run(
            &dir.join("nope.sh"),
            HookStage::Precheck,
            &HookEnv::default(),
            Duration::from_secs(1),
        ));
        // Natively the spawn itself fails (ENOENT); under qemu-user (the armv7 unit tests)
        // the exec failure of posix_spawn's child is not passed back, and the child exits 127,
        // as a shell reports a command it cannot find. Either way the call fails.
        let e = missing.unwrap_err();
        assert!(
            e.contains("cannot run") || e.contains("exit status 127"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
