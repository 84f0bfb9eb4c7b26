"""The router's side of its clients: what comes in and what goes out.

Owns reading the client endpoint (decode, the connection's identity and
policy, contained handler failures answered ``internal``), dispatching
requests to the batch desk, and everything sent back: replies (held while a
client's connection is full), per client connection an ordered outbox of
events — results, failures and the end held for a slow client, news dropped
instead, what gathered in a loop turn sent together as ``events`` — and a
``ping`` to clients with open batches when nothing else was sent. A mixin
of :class:`~.broker.Router`, on the router's thread only.
"""

from __future__ import annotations

import collections
import errno
import time
from typing import Any

import zmq

from .. import protocol
from ..auth import peer_key
from ..errors import InternalError, IOFailureError, ProtocolError
from ..security import Policy
from .model import Batch

__all__ = ["ClientLink", "INSECURE_OWNER", "MUST_DELIVER", "EVENTS_PER_MESSAGE", "PING_EVERY"]

#: The owner of batches submitted over a TCP endpoint without CurveZMQ
#: (``insecure_loopback``): such clients share one identity, and one policy.
INSECURE_OWNER = "insecure-tcp"

#: Event kinds a client must receive (held while its connection is full);
#: the others (queued, started, progress, retrying, batch_progress) are
#: dropped rather than held.
MUST_DELIVER = frozenset({"result", "failed", "batch_done", "cancelled", "paused", "resumed", "degraded"})

#: Events sent together in one ``events`` message, at most.
EVENTS_PER_MESSAGE = 256
#: Seconds of silence towards a client with open batches before a ``ping``.
PING_EVERY = 1.0


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


class ClientLink:
    """Requests in, replies and events out (mixed into Router)."""

    def _link_init(self) -> None:
        self._replies: dict[bytes, collections.deque] = {}  # identity -> frames held back
        # per client connection, the events waiting to go, in order: (batch, kind, job, data)
        self._outbox: dict[bytes, collections.deque] = {}
        self._backlog: set[bytes] = set()  # clients whose connection is full: only what must arrive waits
        self._dirty: set[bytes] = set()  # clients with events queued this loop turn
        self._last_sent: dict[bytes, float] = {}

    def _drain(self, sock: zmq.Socket, handler, *, client: bool = True, keyed: bool = True) -> None:
        """Handle what waits on ``sock`` (at most 1,000 messages). ``keyed=False``: the
        socket has no CurveZMQ, so no peer has a key (none is looked up)."""
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            identity, body = frames[0].bytes, frames[1:]
            user = peer_key(body[0]) if keyed else None  # CurveZMQ key id the ZAP handler approved
            try:
                msg = protocol.decode(body)
            except ProtocolError as exc:
                self.counters["protocol_errors"] += 1
                self.metrics.protocol_error()
                if client:  # an unknown type keeps its request id: the caller's wait ends now
                    self._send_client(identity, "error", req=getattr(exc, "req", None),
                                      error=protocol.pack_error(exc))
                continue
            try:
                handler(identity, msg, user, body[0])
            except ProtocolError as exc:
                self.counters["protocol_errors"] += 1
                self.metrics.protocol_error()
                if client:
                    self._send_client(identity, "error", req=msg.get("req"), error=protocol.pack_error(exc))
            except Exception as exc:  # a bug: this request fails, the router goes on
                self._internal_error(f"{msg.type} handler")
                if client and msg.get("req") is not None:
                    self._send_client(identity, "error", req=msg.get("req"), error=protocol.pack_error(
                        InternalError(f"the router failed on {msg.type}: {type(exc).__name__}",
                                      stage="router")))

    def _owner_of(self, user: str | None) -> str | None:
        """Who a client connection is: its CurveZMQ key id, :data:`INSECURE_OWNER`
        for a keyless connection over TCP (``insecure_loopback``), or None for
        the local (ipc/inproc, 0700 folder) endpoint."""
        if user is None and self._front_insecure:
            return INSECURE_OWNER
        return user

    def _policy_for(self, owner: str | None) -> Policy:
        """The policy bound to a connection: never what the client says about itself."""
        if owner is None:  # the local (ipc/inproc) endpoints, inside a 0700 folder
            return self.config.local_policy or Policy.trusted()
        if owner == INSECURE_OWNER:  # anyone on this machine could be on the other end
            return self.config.insecure_policy or Policy.from_dict({})
        return self.config.key_policies.get(owner) or Policy.from_dict({})

    def _try_send(self, frames: list) -> str:
        """Send without blocking: ``"sent"``, ``"full"`` (the peer's queue) or ``"gone"``."""
        try:
            self._front.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return "full"
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EAGAIN:
                return "full"
            if exc.errno != errno.EHOSTUNREACH:
                self._log.debug("client send failed: %s", exc)
            return "gone"
        self._last_sent[frames[0]] = time.monotonic()
        return "sent"

    def _send_client(self, identity: bytes, msg_type: str, **fields: Any) -> None:
        """A reply: delivered in order, held while the client's connection is full."""
        frames = [identity, *protocol.encode(msg_type, **fields)]
        held = self._replies.get(identity)
        if held is not None:
            held.append(frames)
            return
        if self._try_send(frames) == "full":
            self._replies[identity] = collections.deque([frames])

    def _event(self, batch: Batch, kind: str, job: str | None = None, **data: Any) -> None:
        """Queue an event for the batch's client; it leaves with the others of this loop turn."""
        identity = batch.client
        if identity is None:
            return  # nobody attached: a client that attaches gets the finished files replayed
        if identity in self._backlog and kind not in MUST_DELIVER:
            return  # behind held results: news of this kind waits for nobody
        out = self._outbox.get(identity)
        if out is None:
            out = self._outbox[identity] = collections.deque()
        out.append((batch.id, kind, job, data))
        self._dirty.add(identity)

    def _flush(self, identity: bytes, budget: int = 16) -> None:
        """Send what a client's outbox holds, in order, several events a message,
        until its connection is full (at most ``budget`` messages: the rest next turn)."""
        out = self._outbox.get(identity)
        while out:
            if budget <= 0:
                self._dirty.add(identity)
                return
            budget -= 1
            n = min(len(out), EVENTS_PER_MESSAGE)
            if n == 1:
                bid, kind, job, data = out[0]
                body = protocol.encode("event", batch=bid, kind=kind, job=job, data=data)
            else:
                body = protocol.encode("events", events=[list(out[i]) for i in range(n)])
            sent = self._try_send([identity, *body])
            if sent == "full":
                if identity not in self._backlog:  # from now on only what must arrive waits
                    self._backlog.add(identity)
                    kept = [e for e in out if e[1] in MUST_DELIVER]
                    out.clear()
                    out.extend(kept)
                return
            if sent == "gone":  # the client left; one that attaches gets a replay
                out.clear()
                for batch in self._batches.values():
                    if batch.client == identity:
                        batch.client = None
                break
            for _ in range(n):
                out.popleft()
        self._outbox.pop(identity, None)
        self._backlog.discard(identity)

    def _forget_events(self, identity: bytes | None, batch_id: str) -> None:
        """Drop the events of one batch still waiting for ``identity`` (a replay follows)."""
        out = self._outbox.get(identity) if identity is not None else None
        if out:
            kept = [e for e in out if e[0] != batch_id]
            out.clear()
            out.extend(kept)

    def _flush_all(self) -> None:
        for identity in list(self._replies):
            held = self._replies[identity]
            while held:
                sent = self._try_send(held[0])
                if sent == "full":
                    break
                held.popleft()  # sent, or nobody to send it to
            if not held:
                del self._replies[identity]
        pending = self._backlog | self._dirty
        self._dirty = set()
        for identity in pending:
            self._flush(identity)

    def _ping_clients(self, now: float) -> None:
        """Tell clients with open batches the router is alive, when nothing else was sent."""
        waiting = {b.client for b in self._batches.values() if not b.finished and b.client is not None}
        for identity in waiting:
            if now - self._last_sent.get(identity, 0.0) >= PING_EVERY and identity not in self._replies:
                self._try_send([identity, *protocol.encode("ping")])
        for identity in [i for i, t in self._last_sent.items() if now - t > 600 and i not in waiting]:
            del self._last_sent[identity]

    def _on_client(self, identity: bytes, msg: protocol.Message, user: str | None = None,
                   _frame: Any = None) -> None:
        owner = self._owner_of(user)
        t = msg.type
        if t == "hello":
            return
        if t == "submit":
            self._submit(identity, msg, self._policy_for(owner), owner)
            return
        if t == "jobs":
            self._jobs_chunk(identity, msg)
            return
        if t == "status":
            self._send_client(identity, "reply", req=msg["req"], ok=True,
                              data={**self.status(msg["batch"], owner=owner),
                                    "features": sorted(protocol.FEATURES)})
            return
        if t == "batch_jobs":
            self._list_jobs(identity, msg, owner)
            return
        if t == "attach":
            self._attach(identity, msg, owner)
            return
        if t in ("cancel", "pause", "resume"):
            batch = self._batches.get(msg["batch"])
            if batch is not None and batch.owner != owner:
                batch = None  # another key's batch: as if it did not exist
            if batch is None:
                self._send_client(identity, "reply", req=msg["req"], ok=False,
                                  data={"message": f"unknown batch {msg['batch']}"})
                return
            getattr(self, f"_{t}")(batch)
            self._send_client(identity, "reply", req=msg["req"], ok=True, data={})
            return
        raise ProtocolError(f"message type {t!r} is not for the client endpoint", stage="protocol")

    # -- batch_jobs: a page of a batch's jobs -------------------------------------------

    def _list_jobs(self, identity: bytes, msg: protocol.Message, owner: str | None) -> None:
        """Answer ``batch_jobs``: a batch this connection owns (as ``attach`` decides:
        another key's batch is unknown), from memory or else from the journal; a
        job whose input is outside the connection's read scope is counted, not listed."""
        bid, req, offset, limit = msg["batch"], msg["req"], msg["offset"], msg["limit"]
        if offset < 0 or limit < 1:
            raise ProtocolError(f"batch_jobs: offset {offset} and limit {limit} must be >= 0 and >= 1",
                                stage="protocol")
        limit = min(limit, protocol.MAX_JOBS_PAGE)
        batch = self._batches.get(bid)
        if batch is not None and batch.owner == owner:
            for reg in self._registering:  # still entering its jobs: answer once they are in
                if reg.batch is batch:
                    prev = reg.then
                    reg.then = lambda prev=prev: (prev and prev(), self._list_jobs(identity, msg, owner))
                    return
            state = ("done" if batch.finished else "cancelled" if batch.cancelled
                     else "paused" if batch.paused else "active")
            jobs = (self._jobs[jid] for jid in batch.jobs[offset:offset + limit])
            rows = [(j.id, j.input, j.output, j.state, j.result, j.error) for j in jobs]
            head = {"batch": bid, "total": len(batch.jobs), "state": state, "in_place": batch.in_place,
                    "priority": batch.priority, "settings": batch.settings, "options": batch.options}
            self._send_page(identity, req, owner, offset, head, rows)
            return
        if batch is not None or self._jw is None:
            self._send_client(identity, "error", req=req, error=protocol.pack_error(
                IOFailureError(f"unknown batch {bid}", stage="jobs")))
            return

        def read(value: Any, err: BaseException | None) -> None:
            if err is not None or value is None or value[0]["owner"] != owner:
                why = f"cannot read batch {bid} from the journal: {err}" if err else f"unknown batch {bid}"
                self._send_client(identity, "error", req=req, error=protocol.pack_error(
                    IOFailureError(why, stage="jobs", retryable=err is not None)))
                return
            row, total, found = value
            head = {"batch": bid, "total": total, "state": row["state"], "in_place": bool(row["in_place"]),
                    "priority": row["priority"], "settings": row["settings"], "options": row["options"]}
            self._send_page(identity, req, owner, offset, head,
                            [(r["id"], r["input"], r["output"], r["status"], r["result"], r["error"])
                             for r in found])

        # SQLite's OFFSET holds up to 2**63-1: past every job anyway, clamped there so the
        # journal answers as memory does (an empty last page), never an io_error
        self._jw.call("jobs_page", bid, min(offset, 2**63 - 1), limit, then=read)

    def _send_page(self, identity: bytes, req: str, owner: str | None, offset: int, head: dict,
                   rows: list) -> None:
        """Send ``rows`` (id, input, output, state, result, error) from ``offset`` as one
        page: as many as fit half a message body, the others left for the next page."""
        scope = self._policy_for(owner).read
        everything = scope.everything
        jobs, hidden, size, n = [], 0, 0, 0
        for jid, src, dst, state, result, error in rows:
            size += 128 + _utf8_len(jid) + _utf8_len(src) + _utf8_len(dst or "")  # its msgpack size, and more
            if n and size > protocol.MAX_BODY_BYTES // 2:
                break
            n += 1
            if not (everything or scope.matches(src)):
                hidden += 1
                continue
            jobs.append({"id": jid, "input": src, "output": dst, "state": state,
                         "status": (result or {}).get("status") if state == "done" else None,
                         "code": (error or {}).get("code") if state in ("failed", "cancelled") else None})
        end = offset + n
        self._send_client(identity, "reply", req=req, ok=True, data={
            **head, "offset": offset, "next": end if end < head["total"] else None,
            "hidden": hidden, "jobs": jobs})

    def announce_degraded(self, reason: str) -> None:
        """Tell every open batch that work now runs in-process."""
        for batch in self._batches.values():
            if not batch.finished:
                self._event(batch, "degraded", reason=reason)
