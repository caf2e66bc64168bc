//! Who an event belongs to: the org and host (from the config), and the
//! workload, resolved from the process's cgroup (path, systemd unit,
//! container id) or name by the first matching rule, with a default.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use glob::Pattern;
use serde::{Deserialize, Serialize};

/// `[identity]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    pub org: String,
    /// Empty: the machine's host name.
    pub host: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            org: "default".to_string(),
            host: String::new(),
        }
    }
}

/// `[workloads]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// The workload of events no rule matches.
    pub default: String,
    /// Tried in order; the first rule whose every given matcher matches
    /// names the workload.
    pub rules: Vec<WorkloadRule>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            default: "host".to_string(),
            rules: Vec::new(),
        }
    }
}

/// One mapping rule. Matchers are globs (`*`, `?`, `[...]`); a rule with
/// several matches only when all of them do. `workload` may use `{unit}`
/// and `{container}`, replaced by the matched process's systemd unit and
/// container id.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadRule {
    /// The cgroup path, e.g. `/system.slice/nginx.service`.
    pub cgroup: Option<String>,
    /// The systemd unit the process runs in, e.g. `nginx.service`.
    pub unit: Option<String>,
    /// The container id (64 hex digits) from the cgroup path.
    pub container: Option<String>,
    /// The process name (comm).
    pub comm: Option<String>,
    pub workload: String,
}

/// What a rule can look at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Subject<'a> {
    pub cgroup: &'a str,
    pub comm: &'a str,
}

struct CompiledRule {
    cgroup: Option<Pattern>,
    unit: Option<Pattern>,
    container: Option<Pattern>,
    comm: Option<Pattern>,
    workload: String,
}

/// Compiled workload rules.
pub struct Resolver {
    rules: Vec<CompiledRule>,
    default: String,
}

#[derive(Debug, thiserror::Error)]
#[error("workloads.rules[{index}].{key}: {message}")]
pub struct RuleError {
    pub index: usize,
    pub key: &'static str,
    pub message: String,
}

/// The systemd unit a cgroup path names: its last component with a unit
/// suffix (`nginx.service`, `session-3.scope`).
pub fn unit_of(cgroup: &str) -> Option<&str> {
    cgroup.rsplit('/').find(|c| {
        [".service", ".scope", ".socket", ".mount", ".timer"]
            .iter()
            .any(|s| c.ends_with(s))
    })
}

/// The container id in a cgroup path: the first run of 64 hex digits
/// (`docker-<id>.scope`, `/docker/<id>`, `cri-containerd-<id>.scope`).
pub fn container_of(cgroup: &str) -> Option<&str> {
    let b = cgroup.as_bytes();
    let mut start = None;
    for (i, c) in b.iter().enumerate() {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            let s = *start.get_or_insert(i);
            if i + 1 - s == 64 && b.get(i + 1).is_none_or(|n| !n.is_ascii_hexdigit()) {
                return Some(&cgroup[s..=i]);
            }
        } else {
            start = None;
        }
    }
    None
}

impl Resolver {
    pub fn new(cfg: &WorkloadConfig) -> Result<Self, RuleError> {
        let mut rules = Vec::new();
        for (index, r) in cfg.rules.iter().enumerate() {
            let compile = |key: &'static str, v: &Option<String>| {
                v.as_deref()
                    .map(Pattern::new)
                    .transpose()
                    .map_err(|e| RuleError {
                        index,
                        key,
                        message: e.to_string(),
                    })
            };
            if r.workload.is_empty() {
                return Err(RuleError {
                    index,
                    key: "workload",
                    message: "is empty".into(),
                });
            }
            rules.push(CompiledRule {
                cgroup: compile("cgroup", &r.cgroup)?,
                unit: compile("unit", &r.unit)?,
                container: compile("container", &r.container)?,
                comm: compile("comm", &r.comm)?,
                workload: r.workload.clone(),
            });
        }
        Ok(Self {
            rules,
            default: cfg.default.clone(),
        })
    }

    /// The workload of a process.
    pub fn resolve(&self, s: &Subject<'_>) -> String {
        let unit = unit_of(s.cgroup);
        let container = container_of(s.cgroup);
        for r in &self.rules {
            let ok = |p: &Option<Pattern>, v: Option<&str>| match p {
                None => true,
                Some(p) => v.is_some_and(|v| p.matches(v)),
            };
            if ok(&r.cgroup, Some(s.cgroup))
                && ok(&r.unit, unit)
                && ok(&r.container, container)
                && ok(&r.comm, Some(s.comm))
            {
                let w = r
                    .workload
                    .replace("{unit}", unit.unwrap_or(""))
                    .replace("{container}", container.map_or("", |c| &c[..12]));
                if !w.is_empty() {
                    return w;
                }
            }
        }
        self.default.clone()
    }
}

/// The host name to stamp on events.
pub fn host_name(cfg: &IdentityConfig) -> String {
    if !cfg.host.is_empty() {
        return cfg.host.clone();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// cgroup v2 ids (the inode numbers of cgroup directories) to paths, by
/// walking the cgroup2 mount; rescanned on a miss at most once a second.
pub struct Cgroups {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    scanned: Option<Instant>,
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` or, on hybrid hosts,
/// `/sys/fs/cgroup/unified`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mount = pre.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount))
    })
}

impl Cgroups {
    pub fn new() -> Self {
        let mut c = Self {
            root: cgroup2_mount(),
            paths: HashMap::new(),
            scanned: None,
        };
        c.scan();
        c
    }

    fn scan(&mut self) {
        use std::os::unix::fs::MetadataExt;
        self.scanned = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            if let Ok(md) = std::fs::metadata(&dir) {
                let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
                self.paths
                    .insert(md.ino(), format!("/{}", rel.to_string_lossy()));
            }
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
            if self.paths.len() > 100_000 {
                break;
            }
        }
    }

    /// The path of cgroup `id`, or "" when unknown.
    pub fn path(&mut self, id: u64) -> String {
        if let Some(p) = self.paths.get(&id) {
            return p.clone();
        }
        if self
            .scanned
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            self.scan();
            if let Some(p) = self.paths.get(&id) {
                return p.clone();
            }
        }
        String::new()
    }
}

impl Default for Cgroups {
    fn default() -> Self {
        Self::new()
    }
}

/// The cgroup path of a process from `/proc/PID/cgroup`: the v2 entry, or on
/// hybrid hosts where that is the root, the most specific v1 path.
pub fn proc_cgroup(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_proc_cgroup(&text)
}

pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    let mut v2 = None;
    let mut best_v1: Option<&str> = None;
    for l in text.lines() {
        let mut parts = l.splitn(3, ':');
        let (Some(id), Some(ctl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctl.is_empty() {
            v2 = Some(path);
        } else if path != "/" && best_v1.is_none_or(|b| path.len() > b.len()) {
            best_v1 = Some(path);
        }
    }
    match (v2, best_v1) {
        (Some(p), _) if p != "/" => Some(p.to_string()),
        (_, Some(p)) => Some(p.to_string()),
        (Some(p), None) => Some(p.to_string()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(rules: &[(&str, &str)]) -> Resolver {
        let rules = rules
            .iter()
            .map(|(m, w)| {
                let (k, v) = m.split_once('=').unwrap();
                let mut r = WorkloadRule {
                    workload: w.to_string(),
                    ..Default::default()
                };
                match k {
                    "cgroup" => r.cgroup = Some(v.into()),
                    "unit" => r.unit = Some(v.into()),
                    "container" => r.container = Some(v.into()),
                    "comm" => r.comm = Some(v.into()),
                    _ => unreachable!(),
                }
                r
            })
            .collect();
        Resolver::new(&WorkloadConfig {
            default: "host".into(),
            rules,
        })
        .unwrap()
    }

    const DOCKER: &str = "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";

    #[test]
    fn first_matching_rule_names_the_workload() {
        let r = resolver(&[
            ("cgroup=/system.slice/nginx.service*", "web"),
            ("comm=postgres", "db"),
            ("container=*", "ctr-{container}"),
            ("unit=*.service", "{unit}"),
        ]);
        let s = |cgroup, comm| Subject { cgroup, comm };
        assert_eq!(r.resolve(&s("/system.slice/nginx.service", "nginx")), "web");
        assert_eq!(
            r.resolve(&s("/system.slice/postgresql.service", "postgres")),
            "db"
        );
        assert_eq!(
            r.resolve(&s("/system.slice/cron.service", "cron")),
            "cron.service"
        );
        assert_eq!(r.resolve(&s(DOCKER, "python3")), "ctr-0123456789ab");
        assert_eq!(r.resolve(&s("/user.slice", "bash")), "host");
        assert_eq!(r.resolve(&s("", "bash")), "host");
    }

    #[test]
    fn units_and_containers_are_read_from_cgroup_paths() {
        assert_eq!(
            unit_of("/system.slice/nginx.service"),
            Some("nginx.service")
        );
        assert_eq!(
            unit_of("/user.slice/user-0.slice/session-3.scope"),
            Some("session-3.scope")
        );
        assert_eq!(unit_of("/"), None);
        assert_eq!(
            container_of(DOCKER),
            Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
        assert_eq!(container_of("/kubepods/burstable/pod1234/abc"), None);
    }

    #[test]
    fn a_bad_rule_names_its_key() {
        let err = Resolver::new(&WorkloadConfig {
            default: "host".into(),
            rules: vec![WorkloadRule {
                unit: Some("[".into()),
                workload: "x".into(),
                ..Default::default()
            }],
        })
        .err()
        .unwrap();
        assert!(
            err.to_string().starts_with("workloads.rules[0].unit:"),
            "{err}"
        );
    }

    #[test]
    fn proc_cgroup_prefers_v2_then_the_most_specific_v1_path() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/a591\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(hybrid).as_deref(),
            Some("/process_api/a591")
        );
        let v2 = "0::/system.slice/nginx.service\n";
        assert_eq!(
            parse_proc_cgroup(v2).as_deref(),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(parse_proc_cgroup("0::/\n").as_deref(), Some("/"));
    }

    #[test]
    fn this_hosts_cgroups_resolve_to_paths() {
        let mut c = Cgroups::new();
        if let Some(root) = c.root.clone() {
            use std::os::unix::fs::MetadataExt;
            let ino = std::fs::metadata(&root).unwrap().ino();
            assert_eq!(c.path(ino), "/");
        }
        assert_eq!(c.path(u64::MAX), "");
    }
}
