"""Several aggregator processes (workers) sharing one fleet on a broker: who serves which
pile, and what part of the fleet target each worker delivers. Pure functions; the broker
side is pilectl/aggregator/brokerlink.py, the design and its failure cases docs/aggregator.md.

Ownership is rendezvous hashing over the live workers: every worker computes the same
owner for a pile from the same set, without talking to the others, and when a worker
leaves only its own piles move (each to the worker that scores highest after it).
The target is shared by putting every worker at the same point of its own reach: with
worker w able to deliver anything in [low_w, high_w], each is asked
low_w + f * (high_w - low_w) for the one f that makes the shares add up to the target
(clipped to the fleet's reach), so the fleet total is met whatever the split of piles.
"""

import hashlib


def score(worker, pile_id):
    digest = hashlib.blake2b(f"{worker}\0{pile_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(pile_id, workers):
    """The worker that serves `pile_id` (None when there is no worker)."""
    return max(workers, key=lambda w: (score(w, pile_id), w), default=None)


def worker_share(target_w, worker, reaches):
    """What `worker` is asked to deliver of `target_w`, given every live worker's reach
    {worker: (low_w, high_w)} (its own among them); whole watts."""
    low = sum(r[0] for r in reaches.values())
    high = sum(r[1] for r in reaches.values())
    mine_low, mine_high = reaches[worker]
    if high <= low:
        return mine_low
    wanted = min(high, max(low, target_w))
    return round(mine_low + (wanted - low) * (mine_high - mine_low) / (high - low))
