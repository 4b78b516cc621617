//! Which process of a multi-process training run this one is. MPI's launcher
//! (`mpirun`/`mpiexec` of Open MPI or MPICH, Slurm's `srun`) starts the processes and
//! says each one's rank in its environment; torchrun's `RANK`/`WORLD_SIZE` and
//! SageMaker's `resourceconfig.json` are read to catch a launch that cannot work.

use std::path::Path;

use resnet::backend::DeviceSpec;

/// This process's place in a training run of `size` processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// The rank among the processes of this machine (which GPU: `cuda:LOCAL_RANK`).
    pub local_rank: Option<usize>,
}

impl World {
    /// One process.
    pub fn alone() -> Self {
        World {
            rank: 0,
            size: 1,
            local_rank: None,
        }
    }

    /// More than one process.
    pub fn is_distributed(&self) -> bool {
        self.size > 1
    }

    /// Rank 0 validates, logs the epoch lines and writes the model.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }
}

/// SageMaker's `/opt/ml/input/config/resourceconfig.json` (the fields used here).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ResourceConfig {
    pub current_host: String,
    pub hosts: Vec<String>,
}

impl ResourceConfig {
    /// SageMaker's place for it.
    pub const PATH: &'static str = "/opt/ml/input/config/resourceconfig.json";

    /// Read `path`; `Ok(None)` when there is no such file.
    pub fn read(path: &Path) -> Result<Option<Self>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: not SageMaker's resource config: {e}", path.display()))
    }
}

/// The rank variables of the launchers MPI programs run under, (rank, size) each:
/// Open MPI's `mpirun`, MPICH's Hydra and Slurm's PMI.
const MPI_RANK_VARS: &[(&str, &str)] = &[
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMI_RANK", "PMI_SIZE"),
    ("PMIX_RANK", "OMPI_COMM_WORLD_SIZE"),
];
const LOCAL_RANK_VARS: &[&str] = &[
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "LOCAL_RANK",
];

/// How to start `size` processes, for messages.
fn how_to_launch(size: usize, hosts: Option<&[String]>) -> String {
    let hosts = hosts.map_or(String::new(), |h| format!(" -H {}", h.join(",")));
    format!(
        "rectrain joins its processes with MPI: start all {size} with one launcher, e.g. \
         `mpirun -np {size}{hosts} rectrain …` (Open MPI; `srun` under Slurm), every one with the \
         same command line"
    )
}

/// This process's world, from its environment (`env` looks a variable up) and
/// SageMaker's resource config when there is one. No launcher and no settings is one
/// process; a world size of 1 anywhere is one process too.
pub fn detect(
    env: &dyn Fn(&str) -> Option<String>,
    sagemaker: Option<&ResourceConfig>,
) -> Result<World, String> {
    let number = |name: &str| -> Result<Option<usize>, String> {
        env(name)
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("{name}={v:?} is not a whole number"))
            })
            .transpose()
    };
    let mut local_rank = None;
    for name in LOCAL_RANK_VARS {
        if let Some(v) = number(name)? {
            local_rank = Some(v);
            break;
        }
    }
    let mut launched = None;
    for (rank_var, size_var) in MPI_RANK_VARS {
        if let (Some(rank), Some(size)) = (number(rank_var)?, number(size_var)?) {
            launched = Some((rank, size, *rank_var));
            break;
        }
    }
    let torch_rank = number("RANK")?;
    let torch_size = number("WORLD_SIZE")?;

    let Some((rank, size, rank_var)) = launched else {
        // Not started by an MPI launcher: one process, unless something asks for more.
        if let Some(size) = torch_size.filter(|s| *s > 1) {
            return Err(format!(
                "WORLD_SIZE={size}, but this process was not started by an MPI launcher. {}",
                how_to_launch(size, None)
            ));
        }
        if let Some(rc) = sagemaker.filter(|rc| rc.hosts.len() > 1) {
            return Err(format!(
                "SageMaker's resource config lists {} hosts ({}), but this process was not \
                 started by an MPI launcher. {}",
                rc.hosts.len(),
                rc.hosts.join(", "),
                how_to_launch(rc.hosts.len(), Some(&rc.hosts))
            ));
        }
        return Ok(World {
            local_rank,
            ..World::alone()
        });
    };
    if size == 0 || rank >= size {
        return Err(format!(
            "{rank_var}: rank {rank} of {size} processes does not exist"
        ));
    }
    // torchrun's variables, when set as well, must say the same.
    if let Some(s) = torch_size.filter(|s| *s != size) {
        return Err(format!(
            "WORLD_SIZE={s}, but the MPI launcher started {size} processes: give the launcher \
             {s} processes (mpirun -np {s}) or drop WORLD_SIZE"
        ));
    }
    if let Some(r) = torch_rank.filter(|r| *r != rank) {
        return Err(format!(
            "RANK={r}, but the MPI launcher made this process rank {rank}: drop RANK (the \
             launcher numbers the processes)"
        ));
    }
    Ok(World {
        rank,
        size,
        local_rank,
    })
}

/// The device of this rank: `--device cuda` (which names GPU 0) on a rank of several
/// means this machine's GPU `LOCAL_RANK` (one GPU per process, as torchrun's scripts
/// do); any other device is kept.
pub fn device_for_rank(spec: DeviceSpec, world: &World) -> DeviceSpec {
    match (&spec, world.local_rank) {
        (DeviceSpec::Cuda(ids), Some(local)) if world.is_distributed() && ids == &[0] => {
            DeviceSpec::Cuda(vec![local])
        }
        _ => spec,
    }
}

/// SageMaker's `kv_store` against the world: `dist_sync` and `dist_device_sync` are
/// what rectrain does on several processes, `dist_async` is refused, and the
/// single-machine kinds (`local`, `device`) are refused on several processes (MXNet
/// would train each machine alone). On one process every kind trains the same way.
pub fn check_kv_store(kv_store: Option<&str>, world: &World) -> Result<(), String> {
    match (kv_store, world.is_distributed()) {
        (Some("dist_async"), _) => Err(
            "kv_store dist_async is not supported: rectrain trains synchronously \
             (kv_store dist_sync or dist_device_sync)"
                .into(),
        ),
        (Some(k @ ("local" | "device")), true) => Err(format!(
            "kv_store {k} trains each machine alone, but this is rank {} of {}: use \
             kv_store dist_sync (or leave it out)",
            world.rank, world.size
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    fn sagemaker(current: &str, hosts: &[&str]) -> ResourceConfig {
        ResourceConfig {
            current_host: current.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn nothing_given_is_one_process() {
        assert_eq!(detect(&env(&[]), None).unwrap(), World::alone());
        // WORLD_SIZE=1, one-process launches and one-host SageMaker jobs alike.
        assert_eq!(
            detect(&env(&[("WORLD_SIZE", "1"), ("RANK", "0")]), None).unwrap(),
            World::alone()
        );
        let one = env(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "1")]);
        assert!(!detect(&one, None).unwrap().is_distributed());
        let rc = sagemaker("algo-1", &["algo-1"]);
        assert_eq!(detect(&env(&[]), Some(&rc)).unwrap(), World::alone());
    }

    #[test]
    fn each_launchers_rank_variables() {
        let cases = [
            vec![
                ("OMPI_COMM_WORLD_RANK", "2"),
                ("OMPI_COMM_WORLD_SIZE", "3"),
                ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ],
            vec![
                ("PMI_RANK", "2"),
                ("PMI_SIZE", "3"),
                ("MPI_LOCALRANKID", "1"),
            ],
            vec![("PMI_RANK", "2"), ("PMI_SIZE", "3"), ("LOCAL_RANK", "1")],
        ];
        for vars in cases {
            let w = detect(&env(&vars), None).unwrap();
            assert_eq!(
                w,
                World {
                    rank: 2,
                    size: 3,
                    local_rank: Some(1)
                },
                "{vars:?}"
            );
            assert!(w.is_distributed() && !w.is_leader());
        }
    }

    #[test]
    fn torchrun_variables_must_agree_with_the_launcher() {
        let base = [("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            detect(&env(&v), None)
        };
        assert_eq!(with(&[("RANK", "1"), ("WORLD_SIZE", "2")]).unwrap().rank, 1);
        let err = with(&[("WORLD_SIZE", "3")]).unwrap_err();
        assert!(
            err.starts_with("WORLD_SIZE=3, but the MPI launcher started 2 processes"),
            "{err}"
        );
        let err = with(&[("RANK", "0")]).unwrap_err();
        assert!(
            err.starts_with("RANK=0, but the MPI launcher made this process rank 1"),
            "{err}"
        );
    }

    #[test]
    fn a_world_without_a_launcher_is_refused_with_the_command_to_use() {
        let err = detect(&env(&[("WORLD_SIZE", "2"), ("RANK", "0")]), None).unwrap_err();
        assert!(
            err.starts_with("WORLD_SIZE=2, but this process was not started by an MPI launcher")
                && err.contains("`mpirun -np 2 rectrain …`"),
            "{err}"
        );
        let rc = sagemaker("algo-2", &["algo-1", "algo-2"]);
        let err = detect(&env(&[]), Some(&rc)).unwrap_err();
        assert!(
            err.contains("lists 2 hosts (algo-1, algo-2)")
                && err.contains("`mpirun -np 2 -H algo-1,algo-2 rectrain …`"),
            "{err}"
        );
        let err = detect(&env(&[("PMI_RANK", "4"), ("PMI_SIZE", "4")]), None).unwrap_err();
        assert_eq!(err, "PMI_RANK: rank 4 of 4 processes does not exist");
        let err = detect(&env(&[("RANK", "x")]), None).unwrap_err();
        assert_eq!(err, "RANK=\"x\" is not a whole number");
    }

    #[test]
    fn cuda_on_a_rank_of_several_is_its_local_gpu() {
        let rank = |local: Option<usize>, size: usize| World {
            rank: 3,
            size,
            local_rank: local,
        };
        let cuda = |ids: &[usize]| DeviceSpec::Cuda(ids.to_vec());
        assert_eq!(device_for_rank(cuda(&[0]), &rank(Some(1), 4)), cuda(&[1]));
        // One process, no local rank, an explicit other GPU or set, the CPU: kept.
        assert_eq!(device_for_rank(cuda(&[0]), &rank(Some(1), 1)), cuda(&[0]));
        assert_eq!(device_for_rank(cuda(&[0]), &rank(None, 4)), cuda(&[0]));
        assert_eq!(device_for_rank(cuda(&[2]), &rank(Some(1), 4)), cuda(&[2]));
        assert_eq!(
            device_for_rank(cuda(&[0, 1]), &rank(Some(1), 4)),
            cuda(&[0, 1])
        );
        assert_eq!(
            device_for_rank(DeviceSpec::Cpu, &rank(Some(1), 4)),
            DeviceSpec::Cpu
        );
    }

    #[test]
    fn kv_store_kinds_against_the_world() {
        let alone = World::alone();
        let two = World {
            rank: 1,
            size: 2,
            local_rank: None,
        };
        for k in [None, Some("local"), Some("device"), Some("dist_sync")] {
            assert!(check_kv_store(k, &alone).is_ok(), "{k:?}");
        }
        for k in [None, Some("dist_sync"), Some("dist_device_sync")] {
            assert!(check_kv_store(k, &two).is_ok(), "{k:?}");
        }
        assert!(check_kv_store(Some("dist_async"), &alone)
            .unwrap_err()
            .contains("dist_async is not supported"));
        assert!(check_kv_store(Some("local"), &two)
            .unwrap_err()
            .contains("this is rank 1 of 2"));
    }
}
