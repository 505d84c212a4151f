//! The testbed from Rust: a thin wrapper over `scripts/testbed.sh` (the one place the layout is
//! made), with the address plan and commands run inside a namespace.
//!
//! Layout: a switch namespace `<prefix>-sw` with a bridge; relay namespaces `<prefix>-r0`,
//! `<prefix>-r1` (10.77.0.1, 10.77.0.2); gateway namespaces `<prefix>-g<i>`
//! (10.77.(1 + i/250).(1 + i%250)); all /16 on each namespace's `eth0`; optional `tc tbf` rate
//! limit on both ends of every link. [`Testbed`] brings it down on drop.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Settings of `testbed.sh up`.
#[derive(Debug, Clone)]
pub struct TestbedConfig {
    /// Namespace and interface name prefix (1-8 lowercase letters/digits).
    pub prefix: String,
    pub gateways: usize,
    /// 1 or 2.
    pub relays: usize,
    /// `tc tbf` rate on every link (e.g. "1gbit"), or none.
    pub rate: Option<String>,
}

impl Default for TestbedConfig {
    /// 8 gateways, 1 relay, no rate limit, prefix `phtb`.
    fn default() -> Self {
        TestbedConfig {
            prefix: "phtb".into(),
            gateways: 8,
            relays: 1,
            rate: None,
        }
    }
}

/// Why the testbed could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("cannot run {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        what: String,
        status: String,
        stderr: String,
    },
}

/// The address of gateway `i`.
pub fn gateway_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, (1 + i / 250) as u8, (1 + i % 250) as u8)
}

/// The address of relay `i` (0 or 1).
pub fn relay_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, (1 + i) as u8)
}

/// `scripts/testbed.sh` of this checkout.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed.sh")
}

/// A testbed that is up; brought down on drop.
#[derive(Debug)]
pub struct Testbed {
    config: TestbedConfig,
}

fn run(mut cmd: Command, what: &str) -> Result<Output, TestbedError> {
    let out = cmd.output().map_err(|source| TestbedError::Spawn {
        what: what.to_string(),
        source,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(TestbedError::Failed {
            what: what.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl Testbed {
    /// Runs `testbed.sh up` (which first removes anything left with this prefix).
    pub fn up(config: TestbedConfig) -> Result<Testbed, TestbedError> {
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .arg("up")
            .args(["--prefix", &config.prefix])
            .args(["--gateways", &config.gateways.to_string()])
            .args(["--relays", &config.relays.to_string()]);
        if let Some(rate) = &config.rate {
            cmd.args(["--rate", rate]);
        }
        run(cmd, "testbed.sh up")?;
        Ok(Testbed { config })
    }

    pub fn config(&self) -> &TestbedConfig {
        &self.config
    }

    /// Namespace of gateway `i`.
    pub fn gateway_ns(&self, i: usize) -> String {
        format!("{}-g{i}", self.config.prefix)
    }

    /// Namespace of relay `i`.
    pub fn relay_ns(&self, i: usize) -> String {
        format!("{}-r{i}", self.config.prefix)
    }

    /// A command that runs `program` inside namespace `ns` (`ip netns exec`).
    pub fn command_in(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// One ping from namespace `ns` to `addr` (1 s timeout); true when it was answered.
    pub fn ping(&self, ns: &str, addr: Ipv4Addr) -> Result<bool, TestbedError> {
        let mut c = self.command_in(ns, "ping");
        c.args(["-c", "1", "-W", "1", &addr.to_string()]);
        let out = c.output().map_err(|source| TestbedError::Spawn {
            what: "ping".into(),
            source,
        })?;
        Ok(out.status.success())
    }

    /// Runs `testbed.sh down`.
    pub fn down(self) -> Result<(), TestbedError> {
        let r = down(&self.config.prefix);
        std::mem::forget(self);
        r
    }
}

/// Removes every namespace (and stray interface) with this prefix.
pub fn down(prefix: &str) -> Result<(), TestbedError> {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).arg("down").args(["--prefix", prefix]);
    run(cmd, "testbed.sh down").map(|_| ())
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = down(&self.config.prefix);
    }
}

/// Namespaces with this prefix that exist now.
pub fn namespaces(prefix: &str) -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether this process can make network namespaces (root with `ip netns`): `Err` says why not.
pub fn can_make_namespaces() -> Result<(), String> {
    let probe = format!("phprobe{}", std::process::id() % 100_000);
    let add = Command::new("ip").args(["netns", "add", &probe]).output();
    match add {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).output();
            Ok(())
        }
        Ok(o) => Err(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `ip`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan_matches_the_script() {
        assert_eq!(relay_addr(0), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(relay_addr(1), Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(gateway_addr(0), Ipv4Addr::new(10, 77, 1, 1));
        assert_eq!(gateway_addr(249), Ipv4Addr::new(10, 77, 1, 250));
        assert_eq!(gateway_addr(250), Ipv4Addr::new(10, 77, 2, 1));
        let script = std::fs::read_to_string(script()).unwrap();
        assert!(script
            .contains(r#"gateway_addr() { echo "10.77.$((1 + $1 / 250)).$((1 + $1 % 250))"; }"#));
        assert!(script.contains(r#"relay_addr() { echo "10.77.0.$((1 + $1))"; }"#));
    }
}
