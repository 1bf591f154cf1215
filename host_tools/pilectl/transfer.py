"""Putting a package on one pile, sans I/O: from the pile's UPDATE_STATUS, the next step.

`Transfer(package).next(status)` reads one UPDATE_STATUS (the decoded fields) and says
what to do: a request to send (`Send`), to ask again after a while (`WAIT`), that the
pile is rebooting into its trial (`REBOOT`: reconnect, then ask), or that the package
runs and has confirmed itself (`DONE`). A refusal or a rollback raises UpdateFailed
with the pile's own words. The same object serves `pilectl update` (pilectl.field) and
the aggregator's rollout over every transport, so a dropped link or a reboot resumes
from what the pile says it holds, never from what the host remembers.
"""

from dataclasses import dataclass

from pilectl import wire

WAIT = "wait"
REBOOT = "reboot"
DONE = "done"

_VERIFYING, _RECEIVING, _CHECKING, _REBOOTING, _REFUSED, _TRIAL = 1, 2, 3, 4, 5, 6


class UpdateFailed(Exception):
    """The pile refused the package, or its trial boot rolled back: `reason` says why."""

    def __init__(self, reason, rolled_back=False):
        super().__init__(reason)
        self.reason = reason
        self.rolled_back = rolled_back


@dataclass
class Send:
    mtype: int
    fields: dict


def named(status):
    """An UPDATE_STATUS's fields by name (wire.UPDATE_FIELDS), the state as a word."""
    found = {name: status.get(key) for key, name in wire.UPDATE_FIELDS.items()}
    found["state"] = wire.UPDATE_STATES.get(found["state"], found["state"])
    if isinstance(found["package"], bytes):
        found["package"] = found["package"].hex()
    return found


class Transfer:
    """`package` (pilectl.release.Package); `downgrade`: the technician allows an older
    version."""

    def __init__(self, package, downgrade=False):
        self.package = package
        self.downgrade = downgrade
        self.offered = False
        self.committed = False
        self.held = 0  # stream bytes the pile holds, for a progress bar
        self.rollbacks = None  # the pile's count of rollbacks when this transfer began

    def next(self, status):
        package = self.package
        state = status.get(2)
        ours = status.get(10) == package.id
        running = status.get(6)
        rollback = status.get(8)
        if self.rollbacks is None:  # the first status: rollbacks before this transfer
            self.rollbacks = rollback[2] if rollback else 0
        if rollback and rollback[2] > self.rollbacks and rollback[0] == package.version:
            raise UpdateFailed(f"firmware {package.version} rolled back to {running}: "
                               f"{rollback[1]}", rolled_back=True)
        if state == _TRIAL:
            if running != package.version:
                raise UpdateFailed(f"the pile is on trial with firmware {running}: offer "
                                   "this package once that trial has confirmed or rolled back")
            self.committed = True
            return WAIT  # the trial confirms itself once healthy
        if running == package.version and state != _REBOOTING:
            return DONE  # running, and confirmed (or it was already)
        if state == _REFUSED and self.offered:
            raise UpdateFailed(status.get(9) or "the pile refused the package")
        if state in (_VERIFYING, _CHECKING):
            return WAIT
        if state == _REBOOTING:
            self.committed = True
            return REBOOT
        if state != _RECEIVING or not ours:
            if self.committed:  # rebooted, not running it, no rollback said: ask again
                return WAIT
            self.offered = True
            fields = {wire.OFFER_HEAD: package.head, wire.OFFER_SIGNATURE: package.signature}
            if self.downgrade:
                fields[wire.OFFER_DOWNGRADE] = 1
            return Send(wire.UPDATE_OFFER, fields)
        self.offered = True  # resuming what an earlier run offered
        self.held = status.get(3) or 0
        if self.held < package.size:
            data, link = package.chunk_at(self.held)
            return Send(wire.UPDATE_CHUNK, {wire.CHUNK_OFFSET: self.held,
                                            wire.CHUNK_DATA: data, wire.CHUNK_LINK: link})
        return Send(wire.UPDATE_COMMIT, {wire.COMMIT_PACKAGE: package.id})
