"""Whether a fit's epochs run on their team of threads or on one thread, chosen by timing.

With two or more threads, an epoch whose steps are large enough runs as one team, which
shares out every product or, on small networks, computes each half of a batch on its own
thread (src/_network.pyx, src/team.h). Whether that pays depends on the machine as much
as on the network, and on a shared machine it changes with time: what the team costs is
the cache lines its threads pass each other, and their price ranges from tens of
nanoseconds (cores that share a cache) to hundreds. On the 2-vCPU guest this was written
on, a line's round trip between the two cores took 50-130 ns in some hours and 420-520 ns
in others; the 64-128-64-10 network of digits at batch 200 trained 0.81-0.96x as fast on
two threads as on one in one hour (products shared out) and 1.04-1.49x faster in halves
in others, and at times a second core gained nothing at all. No size rule fits all of
that, so the runner measures.

The results are the same bits whichever way an epoch runs (SPEC: identical for every
n_threads), so the choice can only change the speed. A TeamChoice lets the first epoch
run untimed on the team (it pays for cold caches and the threads' start), times the next
four in the order team, one, one, team, compares the faster epoch of each way (a single
stalled epoch, which the guest showed at times, then does not decide; the sums had),
keeps the team only if it was at least TEAM_MARGIN faster (a barely faster team holds a
second core for nothing), and probes again every RECHECK_EPOCHS epochs, for a machine
whose load changes. Networks of one shape that train within SHARE_S of each other share
one TeamChoice (fastbp.sklearn's fits, one after another). An epoch that the team itself
moved to one thread (see below) counts as a team epoch: a team that does that is not
worth keeping. Steps of LONG_STEP_S or more (in the untimed epoch and the first timed
one) are not probed at all: what a team costs is a few hundred microseconds a step at
worst, and probing epochs that long (784-512-512-10 at batch 128 takes 10 ms a step on
one core) would cost seconds. On a busy machine the team's own fallback
(TEAM_MAX_YIELDING in src/_network.pyx) still acts within an epoch.
"""

import sys
import time

# The tests of the team turn this off to run every epoch on the team.
ENABLED = True

PROBE = (True, False, False, True)      # team, one thread, one thread, team (after the
                                        # untimed first epoch)
MAX_CHOICES = 8     # (batch size, threads) pairs remembered per network
LONG_STEP_S = 2e-3
TEAM_MARGIN = 0.05
# A probe's two one-thread epochs cost what the team saves in them: on the 2-vCPU guest
# 2.6 ms of a 0.13 s digits fit (81 epochs), which at 64 probed twice.
RECHECK_EPOCHS = 128
# Networks of one shape (layer sizes, activations, loss, dtype), batch size and thread
# count share one choice while they train within SHARE_S of each other: fastbp.sklearn
# makes a new network for each fit, and GridSearchCV, cross-validation and repeated fits
# train the same shape again and again. The probe's two one-thread epochs had cost every
# such fit 2-4% (a digits fit on the 2-vCPU guest: 1.8-3.7 ms each, the team's epochs
# 1.15-1.5 ms). The shared choice goes on counting epochs, so it probes again every
# RECHECK_EPOCHS epochs of that shape, across fits; one unused for longer than SHARE_S
# starts over (the guest's states lasted minutes to hours).
SHARE_S = 5.0
MAX_SHARED = 16
_shared = {}    # (shape, batch size, threads) -> TeamChoice


class TeamChoice:
    """For one network, batch size and thread count: use_team() before each epoch,
    record() after it."""

    def __init__(self):
        self._warm_up = True
        self._long_so_far = False
        self._plan = list(PROBE)
        self._seconds = {True: float("inf"), False: float("inf")}
        self._use_team = True
        self._recheck = True
        self._since_probe = 0
        self.last_used = time.monotonic()

    def use_team(self):
        if self._warm_up:
            return True
        if self._plan:
            return self._plan[0]
        return self._use_team

    def record(self, used_team, seconds, rows, steps):
        """The time of an epoch of `rows` rows in `steps` steps that ran as use_team()
        said."""
        self.last_used = time.monotonic()
        long_steps = seconds >= LONG_STEP_S * steps
        if self._warm_up:
            self._warm_up = False
            self._long_so_far = long_steps
            return
        if self._long_so_far:
            # long steps in the untimed epoch and in the first timed one: the team, for
            # good. Not the untimed epoch's alone: in benchmarks/bench_sklearn.py on the
            # guest, a digits fit's untimed epoch sometimes took 17 or 100 ms where the
            # next took 1.5 (cause not found), and such a fit never probed.
            self._long_so_far = False
            if long_steps and used_team:
                self._plan = []
                self._recheck = False
                return
        if not self._plan:
            self._since_probe += 1
            if self._recheck and self._since_probe >= RECHECK_EPOCHS:
                self._plan = list(PROBE)
                self._seconds = {True: float("inf"), False: float("inf")}
            return
        if used_team != self._plan[0]:
            return
        self._plan.pop(0)
        # the faster of each way's two epochs: one epoch that stalls (a core taken away
        # for a few milliseconds, seen on the guest) does not decide the choice
        self._seconds[used_team] = min(self._seconds[used_team], seconds / rows)
        if not self._plan:
            self._use_team = self._seconds[True] < (1 - TEAM_MARGIN) * self._seconds[False]
            self._since_probe = 0

    def steady_epochs(self):
        """How many of the next epochs use_team() will answer alike without timing them
        (fastbp/network.py runs that many in one compiled call): 0 while probing, else
        until the next probe."""
        if self.probing:
            return 0
        if not self._recheck:
            return sys.maxsize
        return max(RECHECK_EPOCHS - self._since_probe, 0)

    @property
    def probing(self):
        return self._warm_up or bool(self._plan)


def choice_for(choices, key, shape):
    """The TeamChoice for key = (batch size, threads) of a network of this shape (a
    hashable of its sizes, activations, loss and dtype): the one networks of the shape
    share (see SHARE_S), made when there is none or it was last used more than SHARE_S
    ago, and kept in `choices` (the network's dict, which is emptied first when it holds
    MAX_CHOICES already: partial_fit with ever new chunk sizes)."""
    now = time.monotonic()
    shared_key = (shape, key)
    choice = _shared.get(shared_key)
    if choice is None or now - choice.last_used > SHARE_S:
        if choice is None and len(_shared) >= MAX_SHARED:
            del _shared[min(_shared, key=lambda k: _shared[k].last_used)]
        choice = _shared[shared_key] = TeamChoice()
    if key not in choices and len(choices) >= MAX_CHOICES:
        choices.clear()
    choices[key] = choice
    return choice
