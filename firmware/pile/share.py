"""Water filling: an amount of power shared max-min fair under caps.

One rule for every split of power among piles: the aggregator's fleet split
(pilectl/aggregator/split.py, through pile.surface) and a site group's allowances
(pile/site.py). Pure, deterministic, in whole watts; with integer bases it is integer
arithmetic only (32-bit safe while the sums stay below 2**30, as a site group's do).
"""


def fill(amount, caps, bases):
    """Whole watts x_i in [0, caps[i]] adding up to `amount` (<= sum of caps) that level
    bases[i] + x_i: water filling, the level found by one sweep over sorted breakpoints.
    The watts the level's rounding down leaves go one each, lowest level first, then in
    list order."""
    n = len(caps)
    if amount <= 0:
        return [0] * n
    edges = []
    for i in range(n):
        if caps[i] > 0:
            edges.append((bases[i], 1))
            edges.append((bases[i] + caps[i], -1))
    edges.sort()
    level, filled, slope = edges[0][0], 0, 0
    for at, change in edges:
        step = slope * (at - level)
        if slope and filled + step >= amount:
            break
        filled += step
        level = at
        slope += change
    if slope:
        rest = amount - filled
        level += rest // slope if type(rest) is int else rest / slope  # float bases: exact
    watts = [int(min(caps[i], max(0, level - bases[i]))) for i in range(n)]
    left = amount - sum(watts)
    order = sorted(range(n), key=lambda i: (bases[i] + watts[i], i))
    if left < 0:  # a float base rounded up: take back from the highest
        order.reverse()
    moved = True
    while left and moved:  # fewer watts than piles left, but float rounding may leave more
        moved = False
        for i in order:
            if left == 0:
                break
            if left > 0 and watts[i] < caps[i]:
                watts[i] += 1
                left -= 1
                moved = True
            elif left < 0 and watts[i] > 0:
                watts[i] -= 1
                left += 1
                moved = True
    return watts
