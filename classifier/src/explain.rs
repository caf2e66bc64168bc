//! From SHAP values to sentences a person can act on, and from the features
//! that drove a classification to the ATT&CK technique they point at.

use crate::features::{
    Ancestry, CmdDerived, CmdShape, Context, Feature, Features, File, Head, N_FEATURES, Net,
    Placement, Temporal,
};
use crate::lexicon::{self, FAMILIES, INDICATORS, indicator};

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
/// named). Where the labelled corpus (data/attacks_train.jsonl, Atomic Red
/// Team) gives a technique ATT&CK lists under several tactics one of them,
/// and no test of ours labels it otherwise, that one: process injection is
/// privilege escalation, input capture credential access, a sandbox check
/// discovery. The corpus's newer technique ids (ATT&CK's defence
/// impairment, T1685/T1686) are defence evasion here. Empty for a
/// technique outside the table.
pub fn tactic_of_technique(technique: &str) -> &'static str {
    let parent = technique.split('.').next().unwrap_or(technique);
    match parent {
        "T1059" | "T1609" | "T1072" | "T1204" | "T1203" | "T1569" | "T1106" | "T1129" => {
            "execution"
        }
        "T1095" | "T1105" | "T1571" | "T1572" | "T1090" | "T1219" | "T1071" | "T1132" | "T1001"
        | "T1573" | "T1102" | "T1008" | "T1104" | "T1568" | "T1205" => "command-and-control",
        "T1027" | "T1036" | "T1070" | "T1140" | "T1222" | "T1562" | "T1564" | "T1553" | "T1620"
        | "T1014" | "T1202" | "T1480" | "T1612" | "T1610" | "T1578" | "T1685" | "T1686" => {
            "defense-evasion"
        }
        "T1548" | "T1611" | "T1068" | "T1055" => "privilege-escalation",
        "T1053" | "T1098" | "T1136" | "T1505" | "T1543" | "T1546" | "T1547" | "T1574" | "T1176"
        | "T1554" | "T1525" => "persistence",
        "T1003" | "T1040" | "T1552" | "T1555" | "T1556" | "T1558" | "T1539" | "T1212" | "T1557"
        | "T1056" => "credential-access",
        "T1037" => "persistence",
        "T1110" => "credential-access",
        "T1016" | "T1018" | "T1033" | "T1046" | "T1049" | "T1057" | "T1082" | "T1083" | "T1087"
        | "T1124" | "T1135" | "T1201" | "T1614" | "T1217" | "T1518" | "T1007" | "T1613"
        | "T1580" | "T1619" | "T1526" | "T1069" | "T1120" | "T1652" | "T1497" => "discovery",
        "T1021" | "T1563" | "T1570" | "T1210" | "T1550" => "lateral-movement",
        "T1074" | "T1113" | "T1115" | "T1123" | "T1560" | "T1125" | "T1114" | "T1005" | "T1025"
        | "T1039" | "T1119" | "T1185" | "T1213" | "T1530" => "collection",
        "T1048" | "T1567" | "T1030" | "T1041" | "T1011" | "T1052" | "T1020" | "T1029" | "T1537" => {
            "exfiltration"
        }
        "T1485" | "T1496" | "T1529" | "T1561" | "T1486" | "T1489" | "T1490" | "T1491" | "T1495"
        | "T1498" | "T1499" | "T1531" | "T1565" => "impact",
        "T1133" | "T1190" | "T1195" | "T1199" | "T1078" | "T1659" => "initial-access",
        _ => "",
    }
}

/// Evidence that says little about an intrusion's goal: running a shell or
/// inline code, working in /tmp, a URL, a hidden name, sudo. Any intrusion
/// does these on the way; a tactic is named from them only when nothing
/// more specific is present.
pub fn generic_evidence(feature: usize) -> bool {
    const GENERIC_INDICATORS: [usize; 15] = [
        indicator("cmd_spawn_shell"),
        indicator("cmd_eval"),
        indicator("cmd_pipe_to_shell"),
        indicator("cmd_interp_inline"),
        indicator("cmd_fd_redirect"),
        indicator("cmd_shell_escape"),
        indicator("cmd_background"),
        indicator("cmd_tmp_path"),
        indicator("cmd_hidden_file"),
        indicator("cmd_url"),
        indicator("cmd_remote_copy"),
        indicator("cmd_wipe"),
        indicator("cmd_sudo"),
        indicator("cmd_su"),
        indicator("cmd_downloader"),
    ];
    match Feature::at(feature) {
        Some(Feature::Indicator(i)) => GENERIC_INDICATORS.contains(&i),
        Some(f) => matches!(
            f,
            Feature::Ancestry(Ancestry::ShellUnderService)
                | Feature::Net(Net::ByShellOrInterpreter | Net::ByNonNetworkProgram)
                | Feature::Placement(Placement::ExeInTmp | Placement::ExeHidden)
                | Feature::Head(Head::RootUnderNonRootParent)
        ),
        None => false,
    }
}

/// How a present feature ranks when a flagged event's tactic is named
/// (lower first):
///
/// - 0: high-precision evidence;
/// - 1: other specific evidence;
/// - 2: generic evidence of what the process does (a shell run, a
///   download, sudo);
/// - 3: a service's shell, for a program that shell ran: where it runs;
/// - 4: what the process looks like (a hidden name, an executable in a
///   world-writable directory), which also names ordinary work (`./run`
///   matches a hidden path).
///
/// Streams redirected to a descriptor (`0>&1`) are how a shell is wired
/// up, not what for: they rank after the other high-precision evidence (a
/// /dev/tcp socket says more).
pub fn naming_tier(feature: usize, ctx: &Context) -> u8 {
    if shell_starting_a_shell(feature, ctx) {
        2
    } else if feature == Feature::Ancestry(Ancestry::ShellUnderService).slot() && !ctx.shellish() {
        3
    } else if APPEARANCE.iter().any(|a| a.slot() == feature) {
        4
    } else if crate::HIGH_PRECISION.iter().any(|h| h.slot() == feature)
        && feature != Feature::Indicator(indicator("cmd_fd_redirect")).slot()
    {
        0
    } else if generic_evidence(feature) {
        2
    } else {
        1
    }
}

/// How a process looks rather than what it does (naming tier 4).
const APPEARANCE: [Feature; 3] = [
    Feature::Indicator(indicator("cmd_hidden_file")),
    Feature::Placement(Placement::ExeInTmp),
    Feature::Placement(Placement::ExeHidden),
];

/// Start-up locations a command line can write: a cron table, a service,
/// a shell start-up file.
const STARTUP: [usize; 3] = [
    indicator("cmd_cron"),
    indicator("cmd_service"),
    indicator("cmd_profile"),
];

/// A command channel or a download run by a shell: what an intrusion runs,
/// or installs somewhere to be run.
const PAYLOAD: [Feature; 6] = [
    Feature::Indicator(indicator("cmd_dev_tcp")),
    Feature::Indicator(indicator("cmd_pipe_to_shell")),
    Feature::Indicator(indicator("cmd_nc_exec")),
    Feature::Indicator(indicator("cmd_mkfifo")),
    Feature::Indicator(indicator("cmd_fd_redirect")),
    Feature::CmdDerived(CmdDerived::DownloadExec),
];

/// The technique that names a flagged event before any feature's, when the
/// command line says what its payload is for:
///
/// - a payload written into a start-up location (a reverse shell piped
///   into `crontab -`, a download appended to `~/.bashrc`) is being
///   installed, not run: the start-up location's technique (persistence),
///   as ATT&CK names a cron job or a start-up file whatever it runs;
/// - data written into a `/dev/tcp` socket is sent out (exfiltration), as
///   `lexicon::transfer_technique` tells it from a command channel;
/// - a download piped into a shell runs the program it fetched: when that
///   program's purpose is a technique (`curl …/linpeas.sh | sh` is system
///   discovery), it says what the download is for.
pub fn leading_technique(f: &Features) -> Option<&'static str> {
    // A socket a file's contents are written into sends them out; the
    // same `/dev/tcp` wired to a shell would be a command channel.
    if f.get(Feature::Indicator(indicator("cmd_dev_tcp"))) != 0.0
        && f.context.command_technique == "T1048"
    {
        return Some("T1048");
    }
    if PAYLOAD.iter().any(|p| f.get(*p) != 0.0)
        && let Some(&i) = STARTUP
            .iter()
            .find(|&&i| f.get(Feature::Indicator(i)) != 0.0)
    {
        return Some(INDICATORS[i].technique);
    }
    let t = lexicon::program_technique(&f.context.fetched);
    (!f.context.fetched.is_empty() && !tactic_of_technique(t).is_empty()).then_some(t)
}

/// A shell started through the command's own arguments (`find . -exec
/// /bin/sh`, `vim -c ':!sh'`, `os.system(...)`, `less` with a `!sh`
/// escape): whatever the program is for, what the command does is run a
/// shell, so it is named execution before the program's own technique and
/// the other specific evidence; after the high-precision evidence and what
/// the arguments name (code with a `system(` call written under /var/www
/// is a web shell installed, not a shell run). Not when the shell is wired
/// to a command channel (a reverse or bind shell is command and control)
/// or written into a start-up location (persistence, as
/// [`leading_technique`] names it).
pub fn shell_through_arguments(f: &Features) -> bool {
    f.context.shell_in_arguments
        && !STARTUP.iter().any(|&i| f.get(Feature::Indicator(i)) != 0.0)
        && !(0..N_FEATURES).any(|i| {
            present(i, f.values[i])
                && matches!(
                    technique(i, &f.context).split('.').next(),
                    Some("T1095" | "T1571")
                )
        })
}

/// `-e sh` and `-c bash` name a shell handed to a peer only when a network
/// tool (`nc`, `socat` ...) runs them; in a shell's own `sh -c bash …` they
/// are a shell starting a shell: generic execution.
fn shell_starting_a_shell(feature: usize, ctx: &Context) -> bool {
    feature == Feature::Indicator(indicator("cmd_nc_exec")).slot()
        && !lexicon::has(lexicon::families(&ctx.comm), lexicon::Family::NetTool)
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
    let Some(f) = Feature::at(feature) else {
        return "";
    };
    match f {
        Feature::Indicator(_) if shell_starting_a_shell(feature, ctx) => "T1059.004",
        Feature::Indicator(i) => INDICATORS[i].technique,
        // A shell a service started runs commands there: a web server's
        // too. A web shell *installed* (code written under the web root) is
        // persistence by what its command line names
        // (`lexicon::command_technique`); the commands run through one are
        // execution, whatever tactic their own evidence names.
        Feature::Ancestry(Ancestry::ShellUnderService) => "T1059.004",
        Feature::Ancestry(Ancestry::ShellUnderCron) | Feature::File(File::Cron) => "T1053.003",
        Feature::CmdDerived(CmdDerived::DownloadExec) => "T1105",
        Feature::CmdDerived(CmdDerived::SudoShell) => "T1548.003",
        Feature::Head(Head::RootUnderNonRootParent) => "T1548",
        Feature::Net(Net::PortSuspicious)
        | Feature::CmdDerived(CmdDerived::SuspiciousPortLiteral) => "T1571",
        // A shell, an interpreter or a program with no network purpose
        // talking to a peer is a command channel (a reverse shell): named
        // command and control, as the training corpus labels reverse and
        // bind shells.
        Feature::Net(Net::ByShellOrInterpreter | Net::ByNonNetworkProgram) => "T1095",
        Feature::File(f) => match f {
            File::AuthorizedKeys => "T1098.004",
            File::Shadow => "T1003.008",
            File::Passwd => "T1087.001",
            File::Sudoers => "T1548.003",
            File::LdPreload => "T1574.006",
            File::Systemd => "T1543.002",
            File::Profile => "T1546.004",
            File::Credentials => "T1552.001",
            File::BootModules => "T1547.006",
            _ => "",
        },
        Feature::Placement(Placement::ExeInTmp | Placement::ExeHidden) => "T1036.005",
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
    let svc = &ctx.service_ancestor;
    let path = &ctx.path;
    let port = ctx.port;
    let remote = &ctx.remote;
    let n = value.round() as i64;
    let Some(f) = Feature::at(feature) else {
        return format!("feature {feature} = {value}");
    };
    match f {
        Feature::Indicator(i) => format!("{comm}: {}", INDICATORS[i].sentence),
        Feature::ProcFamily(fam) => format!("{comm} is a {}", fam.phrase()),
        Feature::ParentFamily(fam) => format!("started by {} {parent}", fam.phrase()),
        Feature::Head(h) => match h {
            Head::KindExec => format!("{comm} started"),
            Head::KindConnect => format!("{comm} connected out"),
            Head::KindOpen => format!("{comm} opened {path}"),
            Head::UidRoot => format!("{comm} runs as root"),
            Head::UidService => format!("{comm} runs as a service account"),
            Head::UidUser => format!("{comm} runs as a login user"),
            Head::GidRoot => format!("{comm} runs with group root"),
            Head::UidDiffersFromParent => format!("{comm} runs as another user than {parent}"),
            Head::RootUnderNonRootParent => format!("{comm} became root under non-root {parent}"),
        },
        Feature::Placement(p) => match p {
            Placement::ExeInTmp => format!("{comm} runs from a world-writable directory"),
            Placement::ExeHidden => format!("{comm} runs from a hidden path"),
            Placement::ExeNonstandardDir => {
                format!("{comm} runs from outside the system directories")
            }
            Placement::CommExeMismatch => format!("{comm}'s name differs from its executable"),
            Placement::CommLen => format!("{comm} has a {n}-character name"),
            Placement::CwdTmp => format!("{comm} works in a world-writable directory"),
            Placement::CwdRoot => format!("{comm} works in /"),
            Placement::CwdWebRoot => format!("{comm} works in the web root"),
        },
        Feature::Ancestry(a) => match a {
            Ancestry::Depth => format!("{comm} is {n} levels deep in its process tree"),
            Ancestry::WebServer
            | Ancestry::Database
            | Ancestry::Cron
            | Ancestry::Sshd
            | Ancestry::Ci => format!("{comm} runs under {} {svc}", fam_phrase(svc)),
            Ancestry::Shells => format!("{n} shells in {comm}'s ancestry"),
            Ancestry::Interpreters => format!("{n} interpreters in {comm}'s ancestry"),
            Ancestry::ShellUnderService if ctx.shellish() => {
                format!("shell {comm} spawned by {} {svc}", fam_phrase(svc))
            }
            Ancestry::ShellUnderService => {
                format!("{comm} run by a shell under {} {svc}", fam_phrase(svc))
            }
            Ancestry::ShellUnderCron => format!("shell {comm} spawned by scheduler {svc}"),
        },
        Feature::CmdShape(c) => match c {
            CmdShape::Argc => format!("{comm} has {n} arguments"),
            CmdShape::LenLog2 => format!("{comm} has an unusually long command line"),
            CmdShape::MaxTokenLen => {
                format!("{comm}'s command line carries a {n}-character token")
            }
            CmdShape::Entropy => {
                format!("{comm}'s command line looks random (entropy {value:.1} bits)")
            }
            CmdShape::NonalnumRatio => format!("{comm}'s command line is dense with symbols"),
            CmdShape::DigitRatio => format!("{comm}'s command line is dense with digits"),
            CmdShape::UpperRatio => format!("{comm}'s command line is dense with capitals"),
            CmdShape::Quotes => format!("{comm}'s command line nests {n} quotes"),
            CmdShape::Pipes => format!("{comm}'s command line chains {n} pipes"),
            CmdShape::Separators => format!("{comm}'s command line chains {n} commands"),
            CmdShape::Substitutions => format!("{comm}'s command line substitutes commands"),
            CmdShape::Redirects => format!("{comm}'s command line redirects {n} streams"),
        },
        Feature::CmdDerived(c) => match c {
            CmdDerived::DownloadExec => format!("{comm} downloads code and runs it"),
            CmdDerived::IpLiteral => format!("{comm} names a raw IP address"),
            CmdDerived::PortLiteral => format!("{comm} names a high port"),
            CmdDerived::SuspiciousPortLiteral => {
                format!("{comm} names a port typical of reverse shells")
            }
            CmdDerived::SudoShell => format!("{comm} gets a shell through sudo"),
        },
        Feature::Net(x) => match x {
            Net::PortLog2 | Net::PortEphemeral => {
                format!("outbound connection to unusual port {port}")
            }
            Net::PortCommon => format!("connection to service port {port}"),
            Net::PortSuspicious => format!("outbound connection to rare port {port}"),
            Net::PortPrivileged => format!("connection to privileged port {port}"),
            Net::RemotePrivate => format!("connection to internal address {remote}"),
            Net::RemoteLoopback => format!("connection to loopback {remote}"),
            Net::RemotePublic => format!("connection to public address {remote}"),
            Net::Ipv6 => format!("IPv6 connection to {remote}"),
            Net::PortFirstSeen => format!("first connection from this host to port {port}"),
            Net::RemoteFirstSeen => format!("first connection from this host to {remote}"),
            Net::PortSeenLog2 | Net::RemoteSeenLog2 => {
                format!("rarely used destination {remote}:{port}")
            }
            Net::ByShellOrInterpreter => format!("network connection made by {comm}"),
            Net::ByNonNetworkProgram => {
                format!("{comm} connects to {remote}:{port} though it is no network program")
            }
            Net::ByWebDescendant => {
                format!("connection from a child of {} {svc}", fam_phrase(svc))
            }
        },
        Feature::Temporal(t) => match t {
            Temporal::Execs1s | Temporal::Execs10s | Temporal::Execs60s => {
                format!("burst of {n} program starts on the host")
            }
            Temporal::Connects60s => format!("{n} connections from the host in a minute"),
            Temporal::Writes60s => format!("{n} file writes on the host in a minute"),
            Temporal::SensitiveReads60s => {
                format!("{n} sensitive files read on the host in a minute")
            }
            Temporal::ProgramFirstSeen => format!("{comm} never ran on this host before"),
            Temporal::ProgramIdleLog2s => format!("{comm} has not run here for a long time"),
            Temporal::ParentAgeLog2s => format!("{parent} started moments before {comm}"),
            Temporal::Siblings10s => format!("{parent} started {n} processes in 10 s"),
        },
        Feature::File(x) => match x {
            File::Write => format!("{comm} writes {path}"),
            File::Create => format!("{comm} creates {path}"),
            File::DirFirstWrite => format!("first write to {}", dir(path)),
            File::Shadow => format!("{comm} reads password hashes ({path})"),
            File::AuthorizedKeys => format!("{comm} touches SSH authorized keys ({path})"),
            File::Cron => format!("{comm} touches a cron table ({path})"),
            File::Sudoers => format!("{comm} touches sudoers ({path})"),
            File::LdPreload => format!("{comm} touches the dynamic loader's preload ({path})"),
            File::Credentials => format!("{comm} touches credentials ({path})"),
            File::Etc
            | File::BinDir
            | File::SshDir
            | File::Passwd
            | File::Systemd
            | File::Tmp
            | File::Hidden
            | File::Proc
            | File::VarLog
            | File::BootModules
            | File::Profile
            | File::WebRoot => format!("{comm} opens {path}"),
        },
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
    feature < N_FEATURES
        && value != 0.0
        && !(value < 0.0 && feature == Temporal::ParentAgeLog2s.slot())
}
