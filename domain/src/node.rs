//! This node in a pool behind a load balancer (docs/scale-out.md): whether
//! it takes new users (the operator's state and its capacity), how loaded
//! it is, and the one line it answers HAProxy's agent check with.
//!
//! The balancer places users; warren only reports. A node that is
//! draining or full says `drain`, which HAProxy reads as "no new users,
//! but keep routing the ones stuck here".

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sessions::Registry;

/// Whether the node takes new users, as the operator set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Takes new users while it has room.
    Active,
    /// Takes no new users; its users keep reaching it until moved.
    Draining,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
        }
    }
}

/// The node's identity and capacity, fixed at start.
#[derive(Debug, Clone, Default)]
pub struct NodeSettings {
    /// The name the node reports in an `X-Warren-Node` header on every
    /// response and in `GET /api/node`; `None`: no header.
    pub id: Option<String>,
    /// Users (tenants with a home here) beyond which the node is full;
    /// `None`: no such bound.
    pub max_users: Option<usize>,
    /// Where the operator's state is kept across restarts (`<state
    /// dir>/node-state`); `None`: in memory only.
    pub state_file: Option<PathBuf>,
}

/// One figure with its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge {
    pub used: u64,
    /// `None`: unbounded (no headroom to speak of).
    pub max: Option<u64>,
}

impl Gauge {
    /// The free fraction, 0.0 to 1.0 (1.0 when unbounded).
    pub fn headroom(self) -> f64 {
        match self.max {
            None => 1.0,
            Some(0) => 0.0,
            Some(max) => 1.0 - (self.used.min(max) as f64 / max as f64),
        }
    }

    pub fn is_full(self) -> bool {
        self.max.is_some_and(|max| self.used >= max)
    }
}

/// How loaded the node is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLoad {
    /// Tenants with a home on this node.
    pub users: Gauge,
    /// Sandboxes running.
    pub sandboxes: Gauge,
    /// Terminals open.
    pub terminals: Gauge,
    /// Memory in use on the host, bytes (`MemTotal - MemAvailable`), when
    /// `/proc/meminfo` says.
    pub memory: Option<Gauge>,
}

/// Why the node takes no new users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Draining,
    UsersFull,
    SandboxesFull,
    MemoryFull,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Draining => "draining",
            Closed::UsersFull => "users_full",
            Closed::SandboxesFull => "sandboxes_full",
            Closed::MemoryFull => "memory_full",
        }
    }
}

/// How steeply a node's weight falls with its users: at 6, a node with
/// 30% less room than its peers weighs 12% of them. Measured with three
/// nodes, one holding 6 users of 20, then 24 new users: 10/10/10 at 6,
/// 12/9/9 with linear weights, 8/11/11 at 8 (HAProxy's round-robin lags
/// the weights it is given; docs/scale-out.md).
pub const USERS_STEEPNESS: i32 = 6;

/// Memory headroom under which a node takes no new users: a new user's
/// first sandbox would push the host into reclaim.
pub const MIN_MEMORY_HEADROOM: f64 = 0.05;

impl NodeLoad {
    /// Why the node is closed to new users, if it is.
    pub fn closed(&self, state: NodeState) -> Option<Closed> {
        if state == NodeState::Draining {
            Some(Closed::Draining)
        } else if self.users.is_full() {
            Some(Closed::UsersFull)
        } else if self.sandboxes.is_full() {
            Some(Closed::SandboxesFull)
        } else if self
            .memory
            .is_some_and(|m| m.headroom() < MIN_MEMORY_HEADROOM)
        {
            Some(Closed::MemoryFull)
        } else {
            None
        }
    }

    /// The weight to advertise, 1 to 100: the product of the headrooms
    /// (a minimum would hide a difference in users when memory is the
    /// tightest), the users' raised to the [`USERS_STEEPNESS`]th power.
    /// HAProxy's weighted round-robin shares new users in proportion to
    /// the weights; the steep fall makes a node with more users than its
    /// peers take almost none until they catch up, which approximates
    /// "the least-loaded node gets the next user" (docs/scale-out.md).
    pub fn weight_percent(&self) -> u32 {
        let memory = self.memory.map_or(1.0, Gauge::headroom);
        let h = self.users.headroom().powi(USERS_STEEPNESS)
            * self.sandboxes.headroom()
            * self.terminals.headroom()
            * memory;
        ((h * 100.0).round() as u32).clamp(1, 100)
    }

    /// The line HAProxy's `agent-check` reads: `drain` when closed to new
    /// users, else `up ready N%` (`ready` lifts a drain this agent set
    /// earlier; only the agent may revert its own actions).
    pub fn agent_reply(&self, state: NodeState) -> String {
        match self.closed(state) {
            Some(_) => "drain\n".to_string(),
            None => format!("up ready {}%\n", self.weight_percent()),
        }
    }
}

/// The node's state, shared by the API and the agent listener.
#[derive(Debug)]
pub struct Node {
    settings: NodeSettings,
    draining: AtomicBool,
}

impl Node {
    /// The node, draining if its state file says so (a drained node that
    /// restarts must not take new users before the operator says).
    pub fn new(settings: NodeSettings) -> Node {
        let draining = settings
            .state_file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .is_some_and(|s| s.trim() == NodeState::Draining.as_str());
        Node {
            settings,
            draining: AtomicBool::new(draining),
        }
    }

    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    pub fn state(&self) -> NodeState {
        if self.draining.load(Ordering::SeqCst) {
            NodeState::Draining
        } else {
            NodeState::Active
        }
    }

    /// Sets the state, and writes it to the state file first (so a
    /// change that cannot be kept is not made).
    pub fn set_state(&self, state: NodeState) -> std::io::Result<()> {
        if let Some(file) = &self.settings.state_file {
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, format!("{}\n", state.as_str()))?;
            std::fs::rename(&tmp, file)?;
        }
        self.draining
            .store(state == NodeState::Draining, Ordering::SeqCst);
        Ok(())
    }

    /// The load now: `users` tenants with a home here, the registry's
    /// sandboxes and terminals, the host's memory.
    pub fn measure(&self, users: usize, registry: &Registry) -> NodeLoad {
        let limits = registry.limits();
        NodeLoad {
            users: Gauge {
                used: users as u64,
                max: self.settings.max_users.map(|m| m as u64),
            },
            sandboxes: Gauge {
                used: registry.sandbox_count() as u64,
                max: Some(limits.max_sandboxes as u64),
            },
            terminals: Gauge {
                used: registry.terminal_count() as u64,
                max: Some((limits.max_sandboxes * limits.max_terminals_per_user) as u64),
            },
            memory: memory_gauge(Path::new("/proc/meminfo")),
        }
    }
}

/// Host memory as a gauge of bytes in use, from a `/proc/meminfo`-shaped
/// file (`None` when it cannot be read or lacks the fields).
pub fn memory_gauge(meminfo: &Path) -> Option<Gauge> {
    let text = std::fs::read_to_string(meminfo).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some(Gauge {
        used: total.saturating_sub(available),
        max: Some(total),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(used: u64, max: u64) -> Gauge {
        Gauge {
            used,
            max: Some(max),
        }
    }

    fn load(users: u64) -> NodeLoad {
        NodeLoad {
            users: gauge(users, 20),
            sandboxes: gauge(0, 32),
            terminals: gauge(0, 256),
            memory: Some(gauge(1, 4)),
        }
    }

    #[test]
    fn an_empty_active_node_is_up_with_its_memory_headroom() {
        assert_eq!(load(0).agent_reply(NodeState::Active), "up ready 75%\n");
    }

    #[test]
    fn fewer_users_weigh_more_when_all_else_is_equal() {
        let a = load(3).weight_percent();
        let b = load(4).weight_percent();
        assert!(a > b, "{a} vs {b}");
        // Half full: 0.5^6 of the memory headroom's 75%.
        assert_eq!(load(10).agent_reply(NodeState::Active), "up ready 1%\n");
        assert_eq!(load(2).agent_reply(NodeState::Active), "up ready 40%\n");
    }

    #[test]
    fn a_draining_node_says_drain() {
        assert_eq!(load(0).agent_reply(NodeState::Draining), "drain\n");
        assert_eq!(load(0).closed(NodeState::Draining), Some(Closed::Draining));
    }

    #[test]
    fn a_full_node_says_drain() {
        let full = load(20);
        assert_eq!(full.closed(NodeState::Active), Some(Closed::UsersFull));
        assert_eq!(full.agent_reply(NodeState::Active), "drain\n");
        let mut sandboxes = load(0);
        sandboxes.sandboxes = gauge(32, 32);
        assert_eq!(sandboxes.agent_reply(NodeState::Active), "drain\n");
        let mut memory = load(0);
        memory.memory = Some(gauge(99, 100));
        assert_eq!(memory.closed(NodeState::Active), Some(Closed::MemoryFull));
    }

    #[test]
    fn a_nearly_full_node_still_weighs_one_percent() {
        let mut l = load(0);
        l.users = gauge(199, 200);
        l.memory = Some(gauge(90, 100));
        assert_eq!(l.agent_reply(NodeState::Active), "up ready 1%\n");
    }

    #[test]
    fn unbounded_figures_do_not_weigh() {
        let l = NodeLoad {
            users: Gauge { used: 5, max: None },
            sandboxes: gauge(0, 32),
            terminals: gauge(0, 256),
            memory: None,
        };
        assert_eq!(l.agent_reply(NodeState::Active), "up ready 100%\n");
    }

    #[test]
    fn a_drained_node_stays_drained_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let settings = NodeSettings {
            state_file: Some(dir.path().join("node-state")),
            ..Default::default()
        };
        Node::new(settings.clone())
            .set_state(NodeState::Draining)
            .unwrap();
        let again = Node::new(settings.clone());
        assert_eq!(again.state(), NodeState::Draining);
        again.set_state(NodeState::Active).unwrap();
        assert_eq!(Node::new(settings).state(), NodeState::Active);
        // A state that cannot be written is not taken.
        let n = Node::new(NodeSettings {
            state_file: Some(dir.path().join("missing/node-state")),
            ..Default::default()
        });
        assert!(n.set_state(NodeState::Draining).is_err());
        assert_eq!(n.state(), NodeState::Active);
    }

    #[test]
    fn memory_is_read_from_meminfo() {
        let dir = std::env::temp_dir().join(format!("warren-meminfo-{}", std::process::id()));
        std::fs::write(
            &dir,
            "MemTotal:        4000 kB\nMemFree:  10 kB\nMemAvailable:    1000 kB\n",
        )
        .unwrap();
        let g = memory_gauge(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(g, gauge(3000 * 1024, 4000 * 1024));
        assert_eq!(memory_gauge(Path::new("/nonexistent/meminfo")), None);
    }

    #[test]
    fn node_state_round_trips() {
        let n = Node::new(NodeSettings::default());
        assert_eq!(n.state(), NodeState::Active);
        n.set_state(NodeState::Draining).unwrap();
        assert_eq!(n.state(), NodeState::Draining);
        assert_eq!(
            serde_json::to_string(&NodeState::Draining).unwrap(),
            "\"draining\""
        );
    }
}
