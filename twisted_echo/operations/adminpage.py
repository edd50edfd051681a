# -*- test-case-name: tests.test_adminpage -*-
"""
C{/faults} on the C{--metrics} listener with C{--admin}: read, replace and
clear each listener's fault profile while the server runs (issue 21,
docs/faults.md "At run time").

 - C{GET /faults}: C{{"listeners": [{"listener", "profile", "seed"},
   ...]}}, every listener key that can take a profile (running services'
   stream names, C{udp}, C{whoami-udp}), C{profile} and C{seed} L{None}
   without one;
 - C{GET /faults/LISTENER}: that listener's object alone;
 - C{PUT /faults/LISTENER}: the body is the profile, as JSON
   C{{"profile": "TEXT"}} or as the text itself; answered with the new
   object. It applies from the next connection or datagram
   (L{twisted_echo.faults.runtime});
 - C{DELETE /faults/LISTENER}: no profile from the next connection on.

Errors, one line of text: 400 the profile does not parse (the reason from
L{twisted_echo.faults.profile.ProfileError}; the profile in force is
unchanged), 404 no such listener, 405 another method, 409 a change the
server cannot make at run time (none in C{twistd}: a C{refuse} fault is
taken from the change on).

With C{--workers}, the supervisor serves it: its slots
(L{twisted_echo.app.forwarded.ForwardedFaultSlot}) check a change once,
then send it to every worker; C{replace} and C{clear} return a L{Deferred}
that fires with the answer once every live worker applied it (the answer
adds C{"workers": [1, 2]}), or fails: then 504 with one line naming the
workers that did not confirm (or refused) in time.

C{/health}: readiness, health and the listeners switched at run time
(L{twisted_echo.operations.health}, docs/faults.md "A backend that fails
on cue"):

 - C{GET /health}: C{{"readyz": "pass"|"fail", "healthz": "pass"|"fail",
   "listeners": "serve"|"pause"}};
 - C{PUT /health}: a JSON object with one or more of those fields (the
   others stay as they are); answered with the new state;
 - C{DELETE /health}: back to C{pass}, C{pass}, C{serve}.

Errors, one line of text: 400 a body that is not such an object (not JSON,
an unknown field, a bad value; nothing changes), 405 another method, 501
C{"listeners": "pause"} with C{--workers} (nothing changes; the probes
switch there, as the supervisor serves them).

The listener's bounds apply (L{twisted_echo.operations.httpbounds}): the
body is part of the request and bounded with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from twisted_echo.faults.profile import ProfileError
from twisted_echo.faults.runtime import SwapRefusedError
from twisted_echo.operations.health import (
    HealthSwitch,
    UnsupportedChangeError,
    changes_from_body,
)

#: The longest profile text taken, in bytes (a profile is a few dozen).
MAX_PROFILE = 4096

_log = Logger()


#: The answer where no profile can change here.
NO_FAULTS_REASON = "no fault profiles can be changed here\n"


class ChangeNotConfirmedError(Exception):
    """
    What a slot's L{Deferred} fails with when a change did not reach every
    worker in time (answered 504); the message names them.
    """


class ProfileSlot(Protocol):
    """
    What C{/faults} changes: a L{twisted_echo.faults.runtime.FaultSlot}
    (one process), or a supervisor's slot whose changes reach its workers
    later (their C{replace} and C{clear} return a L{Deferred} of the
    answer).
    """

    def describe(self) -> dict[str, Any]: ...

    def replace(self, text: str) -> object: ...

    def clear(self) -> object: ...

def _text(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return text.encode("utf-8")


def _json(request: Request, document: Any) -> bytes:
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document).encode("utf-8") + b"\n"


def profile_from_body(body: bytes) -> str:
    """
    @param body: a C{PUT}'s body: JSON C{{"profile": "TEXT"}}, or the
        profile text itself (UTF-8).
    @return: the profile text, stripped.
    @raise ValueError: the body is neither (the message says why).
    """
    if len(body) > MAX_PROFILE:
        raise ValueError(f"a profile of at most {MAX_PROFILE} bytes, not {len(body)}")
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8 text") from None
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as e:
            raise ValueError(f"the body is not valid JSON: {e}") from None
        profile = document.get("profile") if isinstance(document, dict) else None
        if not isinstance(profile, str):
            raise ValueError('a JSON body is {"profile": "TEXT"}')
        text = profile.strip()
    if not text:
        raise ValueError("an empty profile (DELETE clears one)")
    return text


class FaultsPage(Resource):
    """
    C{/faults} (see the module's description).
    """

    def __init__(self, slots: Mapping[str, ProfileSlot] | None) -> None:
        """
        @param slots: each listener key's
            L{twisted_echo.faults.runtime.FaultSlot} (or a supervisor's
            L{ProfileSlot}), in the order C{GET /faults} lists them;
            L{None}: every request is answered 501.
        """
        Resource.__init__(self)
        self.slots = slots

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return ListenerFaultsPage(self.slots, path.decode("utf-8", "replace"))

    def render_GET(self, request: Request) -> bytes:
        if self.slots is None:
            return _text(request, 501, NO_FAULTS_REASON)
        return _json(
            request, {"listeners": [slot.describe() for slot in self.slots.values()]}
        )


class ListenerFaultsPage(Resource):
    """
    C{/faults/LISTENER} (see the module's description).
    """

    isLeaf = True

    def __init__(self, slots: Mapping[str, ProfileSlot] | None, key: str) -> None:
        Resource.__init__(self)
        self.slots = slots
        self.key = key

    def render(self, request: Request) -> bytes | int:
        method = request.method
        if method not in (b"GET", b"HEAD", b"PUT", b"DELETE"):
            request.setHeader(b"allow", b"GET, PUT, DELETE")
            return _text(request, 405, "GET, PUT or DELETE\n")
        if self.slots is None:
            return _text(request, 501, NO_FAULTS_REASON)
        if request.postpath:
            return _text(request, 404, "no such resource\n")
        slot = self.slots.get(self.key)
        if slot is None:
            return _text(
                request,
                404,
                f"no listener {self.key!r} takes a profile here; "
                f"listeners: {', '.join(self.slots) or 'none'}\n",
            )
        done: object = None
        try:
            if method == b"PUT":
                assert request.content is not None
                done = slot.replace(profile_from_body(request.content.read()))
            elif method == b"DELETE":
                done = slot.clear()
        except (ProfileError, ValueError) as e:
            return _text(request, 400, f"bad profile for {self.key}: {e}\n")
        except SwapRefusedError as e:
            return _text(request, 409, f"{self.key}: {e}\n")
        if isinstance(done, Deferred):
            return _answer_later(request, self.key, done)
        return _json(request, slot.describe())


def _answer_later(request: Request, key: str, done: Deferred[Any]) -> int:
    """
    Answer C{request} once C{done} fires: 200 with its document, or 504
    with the one line of its L{ChangeNotConfirmedError} (any other failure
    is logged, and answered 500).
    """
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))

    def answer(document: Any) -> bytes:
        return _json(request, document)

    def failed(failure: Failure) -> bytes:
        if failure.check(ChangeNotConfirmedError):
            return _text(request, 504, f"{key}: {failure.getErrorMessage()}\n")
        _log.failure("changing {key} on the workers", failure, key=key)
        return _text(request, 500, f"{key}: internal error (logged)\n")

    def send(body: bytes) -> None:
        if not gone:
            request.write(body)
            request.finish()

    done.addCallbacks(answer, failed).addCallback(send)
    return NOT_DONE_YET


class HealthAdminPage(Resource):
    """
    C{/health} (see the module's description).
    """

    isLeaf = True

    def __init__(self, switch: HealthSwitch) -> None:
        """
        @param switch: what it reads and changes.
        """
        Resource.__init__(self)
        self.switch = switch

    def render(self, request: Request) -> bytes | int:
        method = request.method
        if method not in (b"GET", b"HEAD", b"PUT", b"DELETE"):
            request.setHeader(b"allow", b"GET, PUT, DELETE")
            return _text(request, 405, "GET, PUT or DELETE\n")
        if request.postpath and request.postpath != [b""]:
            return _text(request, 404, "no such resource\n")
        try:
            if method == b"PUT":
                assert request.content is not None
                self.switch.change(changes_from_body(request.content.read()))
            elif method == b"DELETE":
                self.switch.reset()
        except ValueError as e:
            return _text(request, 400, f"bad /health change: {e}\n")
        except UnsupportedChangeError as e:
            return _text(request, 501, f"{e}\n")
        waiting, self.switch.confirming = self.switch.confirming, None
        if isinstance(waiting, Deferred):
            # With --workers: once every worker paused or resumed.
            state = self.switch.describe()
            waiting.addCallback(lambda _: state)
            return _answer_later(request, "health", waiting)
        return _json(request, self.switch.describe())
