//! From SHAP values to sentences a person can act on, and from the features
//! that drove a classification to the ATT&CK technique they point at.

use crate::features::{Context, N_FEATURES, at, names};
use crate::lexicon::{self, FAMILIES, INDICATORS};

/// ATT&CK tactic ids of the classes (tactic short names as ATT&CK spells them).
pub fn tactic_id(tactic: &str) -> &'static str {
    match tactic {
        "reconnaissance" => "TA0043",
        "resource-development" => "TA0042",
        "initial-access" => "TA0001",
        "execution" => "TA0002",
        "persistence" => "TA0003",
        "privilege-escalation" => "TA0004",
        "defense-evasion" => "TA0005",
        "credential-access" => "TA0006",
        "discovery" => "TA0007",
        "lateral-movement" => "TA0008",
        "collection" => "TA0009",
        "command-and-control" => "TA0011",
        "exfiltration" => "TA0010",
        "impact" => "TA0040",
        _ => "",
    }
}

/// The ATT&CK tactic a technique serves first (ATT&CK lists several for
/// some: scheduled tasks are execution, persistence and privilege
/// escalation; the goal an intrusion on a server most often has with it is
/// named). Empty for a technique outside the table.
pub fn tactic_of_technique(technique: &str) -> &'static str {
    let parent = technique.split('.').next().unwrap_or(technique);
    match parent {
        "T1059" => "execution",
        "T1095" | "T1105" | "T1571" | "T1572" | "T1090" => "command-and-control",
        "T1027" | "T1036" | "T1070" | "T1140" | "T1222" | "T1562" | "T1564" => "defense-evasion",
        "T1548" | "T1611" => "privilege-escalation",
        "T1053" | "T1098" | "T1136" | "T1505" | "T1543" | "T1546" | "T1547" | "T1574" => {
            "persistence"
        }
        "T1003" | "T1040" | "T1552" => "credential-access",
        "T1016" | "T1033" | "T1057" | "T1082" | "T1083" | "T1087" => "discovery",
        "T1056" | "T1074" | "T1560" => "collection",
        "T1048" => "exfiltration",
        "T1485" | "T1496" => "impact",
        _ => "",
    }
}

/// Evidence that says little about an intrusion's goal: running a shell or
/// inline code, working in /tmp, a URL, a hidden name, sudo. Any intrusion
/// does these on the way; a tactic is named from them only when nothing
/// more specific is present.
pub fn generic_evidence(feature: usize) -> bool {
    matches!(
        names()[feature].as_str(),
        "cmd_spawn_shell"
            | "cmd_eval"
            | "cmd_pipe_to_shell"
            | "cmd_interp_inline"
            | "cmd_fd_redirect"
            | "cmd_shell_escape"
            | "cmd_background"
            | "cmd_tmp_path"
            | "cmd_hidden_file"
            | "cmd_url"
            | "cmd_remote_copy"
            | "cmd_wipe"
            | "cmd_sudo"
            | "cmd_su"
            | "cmd_downloader"
            | "shell_under_service"
            | "net_by_shell_or_interpreter"
            | "net_by_non_network_program"
            | "exe_in_tmp"
            | "exe_hidden"
            | "root_under_non_root_parent"
    )
}

fn fam_phrase(comm: &str) -> &'static str {
    let bits = lexicon::families(comm);
    FAMILIES
        .iter()
        .find(|f| lexicon::has(bits, **f))
        .map_or("process", |f| f.phrase())
}

/// The technique a feature points at, when it is clear.
pub fn technique(feature: usize, ctx: &Context) -> &'static str {
    if (at::IND..at::IND + INDICATORS.len()).contains(&feature) {
        return INDICATORS[feature - at::IND].technique;
    }
    match names()[feature].as_str() {
        "shell_under_service" => {
            if lexicon::has(
                lexicon::families(&ctx.service_ancestor),
                lexicon::Family::WebServer,
            ) {
                "T1505.003"
            } else {
                "T1059.004"
            }
        }
        "shell_under_cron" | "file_cron" => "T1053.003",
        "cmd_download_exec" => "T1105",
        "cmd_sudo_shell" => "T1548.003",
        "root_under_non_root_parent" => "T1548",
        "net_port_suspicious" | "cmd_suspicious_port_literal" => "T1571",
        "net_by_shell_or_interpreter" | "net_by_non_network_program" => "T1059.004",
        "file_authorized_keys" => "T1098.004",
        "file_shadow" => "T1003.008",
        "file_passwd" => "T1087.001",
        "file_sudoers" => "T1548.003",
        "file_ld_preload" => "T1574.006",
        "file_systemd" => "T1543.002",
        "file_profile" => "T1546.004",
        "file_credentials" => "T1552.001",
        "file_boot_modules" => "T1547.006",
        "exe_in_tmp" | "exe_hidden" => "T1036.005",
        _ => "",
    }
}

/// A short sentence for a feature that pushed the event towards its class.
pub fn sentence(feature: usize, value: f32, ctx: &Context) -> String {
    let comm = if ctx.comm.is_empty() {
        "process"
    } else {
        &ctx.comm
    };
    let parent = if ctx.parent_comm.is_empty() {
        "its parent"
    } else {
        &ctx.parent_comm
    };
    if (at::IND..at::IND + INDICATORS.len()).contains(&feature) {
        return format!("{comm}: {}", INDICATORS[feature - at::IND].sentence);
    }
    if (at::PROC_FAM..at::PROC_FAM + FAMILIES.len()).contains(&feature) {
        return format!("{comm} is a {}", FAMILIES[feature - at::PROC_FAM].phrase());
    }
    if (at::PARENT_FAM..at::PARENT_FAM + FAMILIES.len()).contains(&feature) {
        return format!(
            "started by {} {parent}",
            FAMILIES[feature - at::PARENT_FAM].phrase()
        );
    }
    let svc = &ctx.service_ancestor;
    let path = &ctx.path;
    let port = ctx.port;
    let remote = &ctx.remote;
    let n = value.round() as i64;
    match names()[feature].as_str() {
        "kind_exec" => format!("{comm} started"),
        "kind_connect" => format!("{comm} connected out"),
        "kind_open" => format!("{comm} opened {path}"),
        "uid_root" => format!("{comm} runs as root"),
        "uid_service" => format!("{comm} runs as a service account"),
        "uid_user" => format!("{comm} runs as a login user"),
        "gid_root" => format!("{comm} runs with group root"),
        "uid_differs_from_parent" => format!("{comm} runs as another user than {parent}"),
        "root_under_non_root_parent" => format!("{comm} became root under non-root {parent}"),
        "exe_in_tmp" => format!("{comm} runs from a world-writable directory"),
        "exe_hidden" => format!("{comm} runs from a hidden path"),
        "exe_nonstandard_dir" => format!("{comm} runs from outside the system directories"),
        "comm_exe_mismatch" => format!("{comm}'s name differs from its executable"),
        "comm_len" => format!("{comm} has a {n}-character name"),
        "cwd_tmp" => format!("{comm} works in a world-writable directory"),
        "cwd_web_root" => format!("{comm} works in the web root"),
        "ancestry_depth" => format!("{comm} is {n} levels deep in its process tree"),
        "ancestor_webserver" | "ancestor_database" | "ancestor_cron" | "ancestor_sshd"
        | "ancestor_ci" => format!("{comm} runs under {} {svc}", fam_phrase(svc)),
        "shells_in_chain" => format!("{n} shells in {comm}'s ancestry"),
        "interpreters_in_chain" => format!("{n} interpreters in {comm}'s ancestry"),
        "shell_under_service" => format!("shell {comm} spawned by {} {svc}", fam_phrase(svc)),
        "shell_under_cron" => format!("shell {comm} spawned by scheduler {svc}"),
        "cmd_argc" => format!("{comm} has {n} arguments"),
        "cmd_len_log2" => format!("{comm} has an unusually long command line"),
        "cmd_max_token_len" => format!("{comm}'s command line carries a {n}-character token"),
        "cmd_entropy" => format!("{comm}'s command line looks random (entropy {value:.1} bits)"),
        "cmd_nonalnum_ratio" => format!("{comm}'s command line is dense with symbols"),
        "cmd_digit_ratio" => format!("{comm}'s command line is dense with digits"),
        "cmd_upper_ratio" => format!("{comm}'s command line is dense with capitals"),
        "cmd_quotes" => format!("{comm}'s command line nests {n} quotes"),
        "cmd_pipes" => format!("{comm}'s command line chains {n} pipes"),
        "cmd_separators" => format!("{comm}'s command line chains {n} commands"),
        "cmd_substitutions" => format!("{comm}'s command line substitutes commands"),
        "cmd_redirects" => format!("{comm}'s command line redirects {n} streams"),
        "cmd_download_exec" => format!("{comm} downloads code and runs it"),
        "cmd_ip_literal" => format!("{comm} names a raw IP address"),
        "cmd_port_literal" => format!("{comm} names a high port"),
        "cmd_suspicious_port_literal" => format!("{comm} names a port typical of reverse shells"),
        "cmd_sudo_shell" => format!("{comm} gets a shell through sudo"),
        "net_port_log2" | "net_port_ephemeral" => {
            format!("outbound connection to unusual port {port}")
        }
        "net_port_common" => format!("connection to service port {port}"),
        "net_port_suspicious" => format!("outbound connection to rare port {port}"),
        "net_port_privileged" => format!("connection to privileged port {port}"),
        "net_remote_private" => format!("connection to internal address {remote}"),
        "net_remote_loopback" => format!("connection to loopback {remote}"),
        "net_remote_public" => format!("connection to public address {remote}"),
        "net_ipv6" => format!("IPv6 connection to {remote}"),
        "net_port_first_seen" => format!("first connection from this host to port {port}"),
        "net_remote_first_seen" => format!("first connection from this host to {remote}"),
        "net_port_seen_log2" | "net_remote_seen_log2" => {
            format!("rarely used destination {remote}:{port}")
        }
        "net_by_shell_or_interpreter" => format!("network connection made by {comm}"),
        "net_by_non_network_program" => {
            format!("{comm} connects to {remote}:{port} though it is no network program")
        }
        "net_by_web_descendant" => format!("connection from a child of {} {svc}", fam_phrase(svc)),
        "execs_1s" | "execs_10s" | "execs_60s" => {
            format!("burst of {n} program starts on the host")
        }
        "connects_60s" => format!("{n} connections from the host in a minute"),
        "writes_60s" => format!("{n} file writes on the host in a minute"),
        "sensitive_reads_60s" => format!("{n} sensitive files read on the host in a minute"),
        "program_first_seen" => format!("{comm} never ran on this host before"),
        "program_idle_log2s" => format!("{comm} has not run here for a long time"),
        "parent_age_log2s" => format!("{parent} started moments before {comm}"),
        "siblings_10s" => format!("{parent} started {n} processes in 10 s"),
        "file_write" => format!("{comm} writes {path}"),
        "file_create" => format!("{comm} creates {path}"),
        "file_dir_first_write" => format!("first write to {}", dir(path)),
        "file_shadow" => format!("{comm} reads password hashes ({path})"),
        "file_authorized_keys" => format!("{comm} touches SSH authorized keys ({path})"),
        "file_cron" => format!("{comm} touches a cron table ({path})"),
        "file_sudoers" => format!("{comm} touches sudoers ({path})"),
        "file_ld_preload" => format!("{comm} touches the dynamic loader's preload ({path})"),
        "file_credentials" => format!("{comm} touches credentials ({path})"),
        "file_etc" | "file_bin_dir" | "file_ssh_dir" | "file_passwd" | "file_systemd"
        | "file_tmp" | "file_hidden" | "file_proc" | "file_var_log" | "file_boot_modules"
        | "file_profile" | "file_web_root" => format!("{comm} opens {path}"),
        other => format!("{other} = {value}"),
    }
}

fn dir(path: &str) -> &str {
    path.rsplit_once('/')
        .map_or(path, |(d, _)| if d.is_empty() { "/" } else { d })
}

/// A feature value counts as present when it is non-zero; SHAP credit for an
/// absent indicator ("no /dev/tcp") makes a poor sentence and is skipped.
pub fn present(feature: usize, value: f32) -> bool {
    // A negative parent age means "parent unknown".
    feature < N_FEATURES && value != 0.0 && !(value < 0.0 && names()[feature] == "parent_age_log2s")
}
