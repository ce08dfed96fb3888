//! Starting `chordal` node processes: the one launcher behind `chordal
//! local`, the process tests and the benchmarks.
//!
//! A [`Launch`] says what to start (which binary, maybe inside a wrapper
//! such as `ip netns exec NS`, on which address, joining through which
//! node, with which data directory and extra flags, logging where); its
//! [`Launch::spawn`] gives a [`NodeProcess`], killed when dropped, that can
//! be stopped gracefully (SIGTERM, the node leaves the ring) or killed
//! outright (SIGKILL, a crash).

use crate::node::data_dir::{ADDRESS_FILE, ADMIN_ADDRESS_FILE};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What to start.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `chordal` binary.
    pub exe: PathBuf,
    /// A command the node runs under, e.g. `["ip", "netns", "exec", "ns1"]`.
    pub wrapper: Vec<String>,
    pub host: String,
    /// 0: a free port, which the node reports in its data directory
    /// ([`NodeProcess::wait_for_address`]).
    pub port: u16,
    /// The node to join through; `None`: start a new ring (`--new-ring`).
    pub bootstrap: Option<String>,
    pub data_dir: PathBuf,
    pub vnodes: u32,
    /// Further flags, after the ones above.
    pub args: Vec<String>,
    /// Where the node's log (stderr) goes.
    pub log: Log,
}

/// Where a node's log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Log {
    Discard,
    /// To this file (created afresh).
    File(PathBuf),
    /// To this process's own stderr.
    Inherit,
}

impl Launch {
    /// A node of `exe` on 127.0.0.1:`port`, joining through `bootstrap`,
    /// with 4 virtual nodes and no log.
    pub fn new(exe: impl Into<PathBuf>, port: u16, bootstrap: &str, data_dir: &Path) -> Launch {
        Launch {
            exe: exe.into(),
            wrapper: Vec::new(),
            host: "127.0.0.1".into(),
            port,
            bootstrap: Some(bootstrap.into()),
            data_dir: data_dir.to_path_buf(),
            vnodes: 4,
            args: Vec::new(),
            log: Log::Discard,
        }
    }

    /// A node of `exe` on a free port of 127.0.0.1 that starts a new ring.
    pub fn new_ring(exe: impl Into<PathBuf>, data_dir: &Path) -> Launch {
        Launch {
            bootstrap: None,
            ..Launch::new(exe, 0, "", data_dir)
        }
    }

    pub fn vnodes(mut self, vnodes: u32) -> Launch {
        self.vnodes = vnodes;
        self
    }

    pub fn host(mut self, host: &str) -> Launch {
        self.host = host.into();
        self
    }

    /// Runs the node under `wrapper` (which must exec the rest of its
    /// command line, so that the child is the node).
    pub fn wrapped(mut self, wrapper: &[&str]) -> Launch {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Launch {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub fn log_to(mut self, log: Log) -> Launch {
        self.log = log;
        self
    }

    /// The address the node listens on.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The command line that starts the node.
    pub fn command(&self) -> Command {
        let mut command = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(&self.exe);
                command
            }
            None => Command::new(&self.exe),
        };
        command
            .args(["--host", &self.host])
            .args(["--port", &self.port.to_string()]);
        match &self.bootstrap {
            Some(bootstrap) => command.args(["--bootstrap", bootstrap]),
            None => command.arg("--new-ring"),
        };
        command
            .args(["--vnodes", &self.vnodes.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// Starts the node.
    pub fn spawn(&self) -> io::Result<NodeProcess> {
        // The addresses a node of an earlier run left must not be taken
        // for this one's.
        for file in [ADDRESS_FILE, ADMIN_ADDRESS_FILE] {
            match std::fs::remove_file(self.data_dir.join(file)) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        let mut command = self.command();
        match &self.log {
            Log::File(path) => command.stderr(Stdio::from(std::fs::File::create(path)?)),
            Log::Discard => command.stderr(Stdio::null()),
            Log::Inherit => command.stderr(Stdio::inherit()),
        };
        let child = command.spawn()?;
        Ok(NodeProcess {
            addr: self.addr(),
            port: self.port,
            data_dir: self.data_dir.clone(),
            log: match &self.log {
                Log::File(path) => Some(path.clone()),
                _ => None,
            },
            child: Some(child),
        })
    }
}

/// A running node process, killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    pub addr: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: Option<PathBuf>,
    child: Option<Child>,
}

impl NodeProcess {
    /// Whether the process was started and neither killed nor stopped since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status, if the process has ended on its own.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Kills the process at once (SIGKILL): a crash.
    pub fn kill_9(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Asks the node to leave the ring and stop (SIGTERM).
    pub fn signal_term(&self) -> io::Result<()> {
        let pid = self.pid().ok_or_else(|| io::Error::other("not running"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .map_err(io::Error::other)
    }

    /// Stops the node gracefully and waits for it, killing it if it has
    /// not exited within `patience`.
    pub fn terminate(&mut self, patience: Duration) -> io::Result<ExitStatus> {
        self.signal_term()?;
        self.wait_for_exit(patience)
    }

    /// Waits for the process to exit, killing it if it has not within
    /// `patience`.
    pub fn wait_for_exit(&mut self, patience: Duration) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + patience;
        let mut child = self
            .child
            .take()
            .ok_or_else(|| io::Error::other("not running"))?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "node {} did not exit within {patience:?}; killed it",
                        self.addr
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The address the node advertises, once it has started: read from its
    /// data directory (where a node on port 0 reports the port it got).
    /// Fails if the process exits or `patience` runs out first.
    pub fn wait_for_address(&mut self, patience: Duration) -> io::Result<String> {
        let (addr, port) = self.wait_for_written(ADDRESS_FILE, patience)?;
        self.addr = addr.clone();
        self.port = port;
        Ok(addr)
    }

    /// The address of the node's admin port, once it serves one (with
    /// `--admin-port 0`, the port it got), as [`NodeProcess::wait_for_address`].
    pub fn wait_for_admin_address(&mut self, patience: Duration) -> io::Result<String> {
        Ok(self.wait_for_written(ADMIN_ADDRESS_FILE, patience)?.0)
    }

    /// The `host:port` the node writes to `file` of its data directory.
    fn wait_for_written(&mut self, file: &str, patience: Duration) -> io::Result<(String, u16)> {
        let deadline = Instant::now() + patience;
        let path = self.data_dir.join(file);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let addr = text.trim().to_string();
                if let Some(port) = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
                    return Ok((addr, port));
                }
            }
            if let Some(status) = self.try_wait()? {
                return Err(io::Error::other(format!(
                    "the node exited ({status}) before writing {}",
                    path.display()
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no address in {} within {patience:?}", path.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the node logged so far (empty without a log file).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_every_setting_and_runs_under_its_wrapper() {
        let launch = Launch::new("/bin/chordal", 10002, "127.0.0.1:10001", Path::new("/d"))
            .vnodes(2)
            .host("10.0.0.2")
            .wrapped(&["ip", "netns", "exec", "ns1"])
            .args(&["-vv"]);
        let command = launch.command();
        assert_eq!(command.get_program(), "ip");
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().to_string())
            .collect();
        assert_eq!(
            args.join(" "),
            "netns exec ns1 /bin/chordal --host 10.0.0.2 --port 10002 \
             --bootstrap 127.0.0.1:10001 --vnodes 2 --data-dir /d -vv"
        );
        assert_eq!(launch.addr(), "10.0.0.2:10002");
    }
}
