"""
The README's console examples, run against a real C{twistd -n sockecho} and
compared with the output the README shows, so that the README cannot drift
from the program.

How a README block is read:

 - A C{```console} block is a terminal transcript: each line starting with
   C{$ } is a command, and the lines after it, up to the next command, are
   its output (standard output and error together, as a terminal shows
   them). Other blocks (C{```sh}) are not run.
 - C{<!-- console: not run: REASON -->} on the line before a block leaves it
   out, saying why; every other console block is run.
 - A block runs against a server of its own on free ports of 127.0.0.1: the
   README's ports 7007 to 7010 (TCP and UDP) stand for four consecutive free
   ports, in the commands and, back again, in the output. That server is
   C{twistd -n sockecho} (the four services on their default ports), except
   when the block's first command starts a sockecho (C{twistd ...
   sockecho ...}): then that one is the block's server, as it would be in
   the reader's other terminal. C{<!-- console: default server running -->}
   starts the default server even so (to show a port already in use).
 - A C{twistd ... sockecho} command with no listener option listens on the
   default ports (as substituted above). If it keeps running, each line
   shown must appear in its log, in order; if it ends, its whole output is
   compared, and C{$ echo $?} shows its exit status.
 - C{<!-- console: type LINE -->} runs the block's command in a terminal
   (C{telnet}) and types C{LINE} where the transcript shows it.
 - In the output shown, a line C{...} stands for any number of lines, and a
   line starting with C{... } for any line ending with the rest.
 - Only what must vary is normalised, on both sides: timestamps, process
   ids, the host name, ephemeral ports (32768 and up), durations C{0.123 s},
   the paths and versions of Python and Twisted in twistd's log and errors,
   and C{\\r\\n} line ends.

Tests needing C{nc} (OpenBSD's, with C{-N}) or C{telnet} are skipped, with
the reason, when those are missing outside CI, and fail in CI.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.process import _is_openbsd_netcat, require_tool, temp_dir
from twisted_echo.app.options import DEFAULTS, Options, listener_keys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
#: The README's ports, and how many consecutive ports stand for them.
README_PORTS = (7007, 7008, 7009, 7010)
HOST = "127.0.0.1"
COMMAND_TIMEOUT = 60.0
SERVER_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
BIN = os.path.dirname(sys.executable)


@dataclass
class Command:
    """
    One C{$ } line of a console block and the output shown after it.
    """

    line: int
    text: str
    output: list[str] = field(default_factory=list)


@dataclass
class Block:
    """
    A C{```console} block of the README.

    @ivar line: the line number of its opening fence.
    @ivar marks: what the C{<!-- console: ... -->} comment before it says.
    """

    line: int
    commands: list[Command]
    marks: list[str]

    def mark(self, prefix: str) -> str | None:
        for mark in self.marks:
            if mark.startswith(prefix):
                return mark[len(prefix) :].strip()
        return None


def console_blocks(path: str = README) -> list[Block]:
    """
    @return: every C{```console} block of the Markdown file at C{path}.
    @raise ValueError: for a block whose first line is not a command.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks = []
    marks: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        comment = re.fullmatch(r"<!-- console: (.*) -->", line.strip())
        if comment is not None:
            marks.append(comment.group(1))
        elif line.strip() == "```console":
            start = index + 1
            commands: list[Command] = []
            index += 1
            while lines[index].strip() != "```":
                text = lines[index]
                if text.startswith("$ "):
                    commands.append(Command(index + 1, text[2:]))
                elif commands:
                    commands[-1].output.append(text)
                elif "not run: " not in " ".join(marks):
                    raise ValueError(f"README.md:{index + 1}: output before a command")
                index += 1
            blocks.append(Block(start, commands, marks))
            marks = []
        elif line.strip():
            marks = []
        index += 1
    return blocks


def free_ports(count: int = len(README_PORTS)) -> list[int]:
    """
    @return: C{count} consecutive ports of 127.0.0.1 free for TCP and UDP
        (below Linux's ephemeral range, which clients' ports come from).
    """
    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        held = []
        try:
            for port in range(base, base + count):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(socket.AF_INET, kind)
                    held.append(s)
                    s.bind((HOST, port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return list(range(base, base + count))
    raise RuntimeError("no free ports")


_EPHEMERAL = re.compile(r"(?<![\d.])(\d{5})(?![\d.])")
_NORMALISE: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"), "<time>"),
    (re.compile(r'("pid":\s*)\d+'), r"\1<pid>"),
    (re.compile(r"^(pid\s+)\d+", re.M), r"\1<pid>"),
    (re.compile(r'("host":\s*)"[^"]*"'), r"\1<host>"),
    (re.compile(r'^(host\s+)"[^"]*"', re.M), r"\1<host>"),
    (re.compile(r"\b\d+\.\d{3} s\b"), "<seconds> s"),
    (
        re.compile(r"twistd \d[\w.]* \(\S+ \d[\w.]*\) starting up"),
        "twistd <version> (<python>) starting up",
    ),
    (re.compile(r"^\S*/twistd -n:", re.M), "twistd -n:"),
]


def normalise(text: str, ports: list[int] | None = None) -> list[str]:
    """
    @param text: output, shown or seen.
    @param ports: the ports standing for L{README_PORTS} (in output seen),
        mapped back to them.
    @return: C{text}'s lines, with what must vary made the same.
    """
    text = text.replace("\r\n", "\n")
    for pattern, replacement in _NORMALISE:
        text = pattern.sub(replacement, text)
    if ports is not None:
        back = {
            str(port): str(readme)
            for port, readme in zip(ports, README_PORTS, strict=True)
        }
        text = re.sub(r"(?<![\d.])\d{5}(?![\d.])", lambda m: back.get(m[0], m[0]), text)
    text = _EPHEMERAL.sub(
        lambda m: "<port>" if 32768 <= int(m[1]) <= 65535 else m[1], text
    )
    return [line.rstrip() for line in text.rstrip("\n").split("\n")] if text else []


def matches(shown: list[str], seen: list[str]) -> bool:
    """
    @return: whether the lines C{seen} are the lines C{shown}, where a line
        C{...} stands for any lines and C{... TEXT} for a line ending with
        C{TEXT}.
    """
    if not shown:
        return not seen
    first, rest = shown[0], shown[1:]
    if first == "...":
        return any(matches(rest, seen[skip:]) for skip in range(len(seen) + 1))
    if not seen:
        return False
    if first.startswith("... "):
        fits = seen[0].endswith(first[3:])
    else:
        fits = seen[0] == first
    return fits and matches(rest, seen[1:])


def appear_in_order(shown: list[str], seen: list[str]) -> bool:
    """
    @return: whether each line C{shown} is seen, in that order, other lines
        between them.
    """
    return matches(["..."] + [x for line in shown for x in (line, "...")], seen)


def substitute(command: str, ports: list[int]) -> str:
    """
    @return: C{command} with the README's ports replaced by C{ports}.
    """
    mapping = {
        str(readme): str(port) for readme, port in zip(README_PORTS, ports, strict=True)
    }
    return re.sub(r"(?<!\d)70(07|08|09|10)(?!\d)", lambda m: mapping[m[0]], command)


def is_server_command(command: str) -> bool:
    """
    @return: whether C{command} runs twistd with sockecho.
    """
    words = shlex.split(command)
    return bool(words) and words[0] == "twistd" and "sockecho" in words


def default_listeners(ports: list[int]) -> dict[str, str]:
    """
    @return: the four services' default listeners, on C{ports}.
    """
    return {
        service: substitute(description, ports)
        for service, description in DEFAULTS.items()
    }


def server_arguments(command: str, ports: list[int]) -> tuple[list[str], int]:
    """
    @param command: a C{twistd ... sockecho ...} command of the README.
    @return: its argument list with the ports substituted and the default
        listeners, on C{ports}, given where the command names none; and the
        number of listeners it opens.
    """
    words = shlex.split(substitute(command, ports))
    at = words.index("sockecho")
    args = words[at + 1 :]
    for service, description in default_listeners(ports).items():
        if not {f"--{service}", f"--no-{service}"} & {a.split("=")[0] for a in args}:
            args += [f"--{service}", description]
    words[at + 1 :] = args
    config = Options()
    try:
        config.parseOptions(args)
        listeners = len(listener_keys(config))
    except Exception:
        listeners = 0  # A bad option: twistd says so and ends.
    return [os.path.join(BIN, "twistd"), *words[1:]], listeners


class Process:
    """
    A running command, its standard output and error read together.
    """

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, done: Callable[[list[str]], bool], timeout: float) -> bool:
        """
        Wait until C{done(lines)} or the process ended and its output is all
        read, at most C{timeout} seconds.

        @return: whether C{done} said so.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(list(self.lines)):
                if not self._reader.is_alive():
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
            return True

    def output_so_far(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def output(self) -> str:
        """
        @return: all the output, once the process has closed it.
        """
        self._reader.join(STOP_TIMEOUT)
        return self.output_so_far()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)


def _listening(count: int) -> Callable[[list[str]], bool]:
    return lambda lines: sum(" listening on " in line for line in lines) >= count


class ReadmeConsoleTests(unittest.TestCase):
    """
    Each console block of the README is one test, added below by
    L{_add_block_tests}.
    """

    def setUp(self) -> None:
        self.cwd = temp_dir(self)
        self.env = dict(os.environ)
        self.env["PATH"] = BIN + os.pathsep + self.env.get("PATH", "")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env.pop("COLUMNS", None)
        self.ports = free_ports()

    def start(self, argv: list[str], listeners: int, cwd: str | None = None) -> Process:
        """
        Start a server and wait until its C{listeners} listen (or it ended).

        @param cwd: its directory; the block's by default.
        """
        server = Process(argv, cwd or self.cwd, self.env)
        self.addCleanup(server.stop)
        self.addCleanup(self.kill_daemon)
        server.wait_for(_listening(listeners), SERVER_TIMEOUT)
        return server

    def kill_daemon(self) -> None:
        """
        Stop a daemonized twistd the block may have started.
        """
        for name in os.listdir(self.cwd):
            if name.endswith(".pid"):
                with open(os.path.join(self.cwd, name)) as f:
                    text = f.read().strip()
                if text.isdigit():
                    try:
                        os.kill(int(text), signal.SIGTERM)
                    except ProcessLookupError:
                        pass

    def require_tools(self, block: Block) -> None:
        words = {
            word
            for command in block.commands
            for part in re.split(r"[|;&]", command.text)
            for word in shlex.split(part)[:1]
        }
        if "nc" in words:
            require_tool(self, "nc", _is_openbsd_netcat)
        if "telnet" in words:
            require_tool(self, "telnet")

    def check(self, command: Command, seen: str, exact: bool = True) -> None:
        """
        Fail unless the output C{seen} of C{command} is the output shown.
        """
        shown = normalise("\n".join(command.output))
        got = normalise(seen, self.ports)
        ok = matches(shown, got) if exact else appear_in_order(shown, got)
        if not ok:
            self.fail(
                f"README.md:{command.line}: $ {command.text}\n"
                "--- shown (normalised):\n" + "\n".join(shown) + "\n"
                "--- seen (normalised):\n" + "\n".join(got)
            )

    def run_block(self, block: Block) -> None:
        self.require_tools(block)
        first = block.commands[0].text
        if not is_server_command(first) or block.mark("default server running") == "":
            # As in the reader's other terminal (and directory: twistd.pid).
            argv, listeners = server_arguments("twistd -n sockecho", self.ports)
            self.start(argv, listeners, cwd=temp_dir(self))
        typed = block.mark("type ")
        status = 0
        for command in block.commands:
            if command.text.strip() == "echo $?":
                self.check(command, str(status))
            elif is_server_command(command.text):
                status = self.run_server_command(command)
            elif typed is not None:
                self.run_in_terminal(command, typed)
            else:
                done = subprocess.run(
                    ["bash", "-c", substitute(command.text, self.ports)],
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=COMMAND_TIMEOUT,
                )
                status = done.returncode
                self.check(command, done.stdout.decode("utf-8", "replace"))

    def run_server_command(self, command: Command) -> int:
        """
        Start the sockecho C{command} says; wait until the lines shown are
        in its log (it keeps running) or it ends (compare all it said).

        @return: its exit status, 0 while it runs.
        """
        argv, listeners = server_arguments(command.text, self.ports)
        server = self.start(argv, listeners)
        if command.output:
            shown = normalise("\n".join(command.output))
            server.wait_for(
                lambda lines: appear_in_order(
                    shown, normalise("\n".join(lines), self.ports)
                ),
                SERVER_TIMEOUT,
            )
        if server.process.poll() is None and server.wait_for(_listening(listeners), 0):
            self.check(command, server.output_so_far(), exact=False)
            return 0
        try:
            status = server.process.wait(SERVER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail(f"README.md:{command.line}: $ {command.text}: neither "
                      "listening nor ended")  # fmt: skip
        self.check(command, server.output())
        return status

    def run_in_terminal(self, command: Command, typed: str) -> None:
        """
        Run C{command} in a terminal, typing C{typed} where its output shows
        it, and compare the transcript up to the last line shown.
        """
        import pexpect

        child = pexpect.spawn(
            "bash",
            ["-c", substitute(command.text, self.ports)],
            cwd=self.cwd,
            env=self.env,
            encoding="utf-8",
            timeout=COMMAND_TIMEOUT,
        )
        self.addCleanup(child.close, force=True)
        transcript = ""
        for line in command.output:
            if line == typed:
                child.sendline(typed)
            child.expect_exact(line)
            transcript += child.before + child.after
        self.check(command, transcript)


def _add_block_tests() -> None:
    """
    Add one test per console block to L{ReadmeConsoleTests}.
    """
    for number, block in enumerate(console_blocks(), 1):
        reason = block.mark("not run: ")

        def test(self: ReadmeConsoleTests, block: Block = block) -> None:
            self.run_block(block)

        first = block.commands[0].text if block.commands else "(no command)"
        test.__doc__ = f"README.md:{block.line}: $ {first}"
        if reason is not None:
            test = unittest.skip(f"README.md:{block.line}: {reason}")(test)
        setattr(ReadmeConsoleTests, f"test_block_{number:02d}_line_{block.line}", test)


_add_block_tests()


class ConventionTests(unittest.TestCase):
    """
    How the README's blocks are read.
    """

    def test_blocks_found(self) -> None:
        """
        The README has console blocks, each with commands, and names the
        tools they use (nc, telnet, sockecho-client, twistd).
        """
        blocks = console_blocks()
        self.assertGreater(len(blocks), 5)
        text = " ".join(c.text for b in blocks for c in b.commands)
        for tool in ("nc ", "telnet ", "sockecho-client ", "twistd "):
            self.assertIn(tool, text)

    def test_matches(self) -> None:
        self.assertTrue(matches(["a", "...", "d"], ["a", "b", "c", "d"]))
        self.assertTrue(matches(["...", "x"], ["x"]))
        self.assertTrue(matches(["... [x] y"], ["12:00 [x] y"]))
        self.assertFalse(matches(["a"], ["a", "b"]))
        self.assertFalse(matches(["... y"], ["x", "y"]))
        self.assertTrue(appear_in_order(["b", "d"], ["a", "b", "c", "d", "e"]))
        self.assertFalse(appear_in_order(["d", "b"], ["a", "b", "c", "d"]))

    def test_normalise(self) -> None:
        ports = [21000, 21001, 21002, 21003]
        self.assertEqual(
            normalise(
                '2026-11-21T13:36:40+0000 x tcp:127.0.0.1:21003 "pid": 4242 '
                "127.0.0.1:45000 0.455 s 21004\r\n",
                ports,
            ),
            [
                '<time> x tcp:127.0.0.1:7010 "pid": <pid> 127.0.0.1:<port> '
                "<seconds> s 21004"
            ],  # fmt: skip
        )

    def test_substitute(self) -> None:
        self.assertEqual(
            substitute("nc 127.0.0.1 7007 udp:x:7010 17007", [1, 2, 3, 4]),
            "nc 127.0.0.1 1 udp:x:4 17007",
        )
        argv, listeners = server_arguments(
            "twistd -n sockecho --no-udp --whoami udp:7010", [1, 2, 3, 4]
        )
        self.assertEqual(argv[1:4], ["-n", "sockecho", "--no-udp"])
        self.assertIn("tcp:1:interface=127.0.0.1", argv)
        self.assertEqual(listeners, 4)
