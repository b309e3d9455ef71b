//! Reading a launcher's environment (torchrun, or anything that sets the same variables).

use crate::DistError;
use std::str::FromStr;

/// Where this process sits in a distributed job, as a launcher describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Global rank (`RANK`).
    pub rank: usize,
    /// Number of processes (`WORLD_SIZE`).
    pub world: usize,
    /// Rank on this node (`LOCAL_RANK`, default `rank`); picks the GPU for NCCL.
    pub local_rank: usize,
    /// Processes on this node (`LOCAL_WORLD_SIZE`, default `world`).
    pub local_world: usize,
    /// Host of the TCPStore (`MASTER_ADDR`).
    pub master_addr: String,
    /// Port of the TCPStore (`MASTER_PORT`).
    pub master_port: u16,
    /// `TORCHELASTIC_USE_AGENT_STORE=True`: torchrun's agent already hosts the store, so every
    /// rank, rank 0 included, connects as a client.
    pub agent_store: bool,
    /// `TORCHELASTIC_RESTART_COUNT` (default 0). Per agent, so it must not key anything shared.
    pub restart_count: u32,
}

impl Launch {
    /// Reads the launch variables. `Ok(None)` when `RANK` and `WORLD_SIZE` are both unset (not a
    /// distributed launch); an error naming the variable when the set is partial or a value is
    /// invalid.
    pub fn from_env() -> Result<Option<Launch>, DistError> {
        Launch::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>, DistError> {
        let (rank, world) = match (get("RANK"), get("WORLD_SIZE")) {
            (None, None) => return Ok(None),
            (Some(_), None) => return Err(env_error("WORLD_SIZE is not set, but RANK is")),
            (None, Some(_)) => return Err(env_error("RANK is not set, but WORLD_SIZE is")),
            (Some(rank), Some(world)) => (parse::<usize>("RANK", &rank)?, parse::<usize>("WORLD_SIZE", &world)?),
        };
        if world == 0 {
            return Err(env_error("WORLD_SIZE=0: must be at least 1"));
        }
        if rank >= world {
            return Err(env_error(format!("RANK={rank} is not below WORLD_SIZE={world}")));
        }
        let (local_rank, local_world) = match (get("LOCAL_RANK"), get("LOCAL_WORLD_SIZE")) {
            (None, None) => (rank, world),
            (None, Some(_)) => return Err(env_error("LOCAL_RANK is not set, but LOCAL_WORLD_SIZE is")),
            (Some(local), None) => (parse::<usize>("LOCAL_RANK", &local)?, world),
            (Some(local), Some(size)) => {
                (parse::<usize>("LOCAL_RANK", &local)?, parse::<usize>("LOCAL_WORLD_SIZE", &size)?)
            }
        };
        if local_rank >= local_world {
            return Err(env_error(format!("LOCAL_RANK={local_rank} is not below LOCAL_WORLD_SIZE={local_world}")));
        }
        let master_addr = match get("MASTER_ADDR") {
            Some(addr) if !addr.trim().is_empty() => addr.trim().to_owned(),
            _ => return Err(env_error("MASTER_ADDR is not set (needed with RANK and WORLD_SIZE)")),
        };
        let master_port = match get("MASTER_PORT") {
            Some(port) => parse::<u16>("MASTER_PORT", &port)?,
            None => return Err(env_error("MASTER_PORT is not set (needed with RANK and WORLD_SIZE)")),
        };
        if master_port == 0 {
            return Err(env_error("MASTER_PORT=0 is not a port"));
        }
        let agent_store = match get("TORCHELASTIC_USE_AGENT_STORE").as_deref().map(str::trim) {
            None | Some("") => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => return Err(env_error(format!("TORCHELASTIC_USE_AGENT_STORE={v:?}: expected True or False"))),
        };
        let restart_count = match get("TORCHELASTIC_RESTART_COUNT") {
            Some(count) => parse::<u32>("TORCHELASTIC_RESTART_COUNT", &count)?,
            None => 0,
        };
        Ok(Some(Launch { rank, world, local_rank, local_world, master_addr, master_port, agent_store, restart_count }))
    }
}

fn env_error(message: impl Into<String>) -> DistError {
    DistError::new("launch", 0, message)
}

fn parse<T: FromStr>(name: &str, value: &str) -> Result<T, DistError> {
    value.trim().parse().map_err(|_| env_error(format!("{name}={value:?} is not a valid number here")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<Option<Launch>, DistError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn no_launch_variables_means_no_launch() {
        assert_eq!(read(&[("MASTER_ADDR", "x")]).unwrap(), None);
    }

    #[test]
    fn torchrun_environment() {
        let launch = read(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "localhost"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            launch,
            Launch {
                rank: 3,
                world: 4,
                local_rank: 1,
                local_world: 2,
                master_addr: "localhost".into(),
                master_port: 29500,
                agent_store: true,
                restart_count: 2,
            }
        );
    }

    #[test]
    fn manual_environment_defaults() {
        let launch = read(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1234")])
            .unwrap()
            .unwrap();
        assert_eq!((launch.local_rank, launch.local_world, launch.agent_store, launch.restart_count), (1, 2, false, 0));
    }

    #[test]
    fn partial_or_invalid_environment_names_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("RANK", "0")], "WORLD_SIZE"),
            (&[("WORLD_SIZE", "2")], "RANK"),
            (&[("RANK", "x"), ("WORLD_SIZE", "2")], "RANK"),
            (&[("RANK", "2"), ("WORLD_SIZE", "2")], "RANK=2"),
            (&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")], "MASTER_ADDR"),
            (&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")], "MASTER_PORT"),
            (&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "70000")], "MASTER_PORT"),
            (&[("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_WORLD_SIZE", "2")], "LOCAL_RANK"),
            (
                &[
                    ("RANK", "0"),
                    ("WORLD_SIZE", "2"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "1"),
                    ("TORCHELASTIC_USE_AGENT_STORE", "maybe"),
                ],
                "TORCHELASTIC_USE_AGENT_STORE",
            ),
        ];
        for (vars, name) in cases {
            let err = read(vars).unwrap_err();
            assert!(err.message.contains(name), "{vars:?}: {err}");
            assert_eq!(err.collective, "launch");
        }
    }
}
