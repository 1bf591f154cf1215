"""The owner's V2G budget (pile/budget.py): a rolling day and week of the pile's own run
time, one more input of the envelope with its own reason bit, the owner's keys within the
technician's bounds, counters that survive reboots and power cuts (CPython and
MicroPython). The property over any requests and telemetry is
tests/test_budget_properties.py."""

import os

from fwtest import FreshState, Host, logged, pile_with_ev, telemetry
from pile import events, limits
from pile.app import SLOT_TECHNICIAN, Pile
from pile.budget import RESERVE_WH, SPENT_DAY, SPENT_WEEK, Budget
from pile.config import NO_BUDGET, Config
from pile.loop import ControlStep
from pile.protocol import ACK, CONFIG, CONFIG_SET, ERR_AUTH, ERR_OUT_OF_RANGE, SETPOINT
from pile.store import Store

HOUR_MS = 3600000
LINK = b"L" * 32
TECH = b"T" * 32


class Owner:
    """A pile with an EV whose converter runs at what it was told, decided by the control
    period's rules (`ControlStep`, so the event log is the board's) with a 5 kW household
    load; the counters are saved after every decision, as the loop does between periods."""

    def __init__(self, store=None, **changes):
        pile = Pile("budget-001", store)
        values = {"site_import_limit_w": 16000, "site_export_limit_w": 11000,
                  "ramp_w_per_s": 1000000}
        values.update(changes)
        pile.set_config(values)
        pile.tel = telemetry()
        self.pile = pile
        self.ctl = pile.ctl
        self.step = ControlStep(pile)
        self.step.polled(True, 0)  # the converter answers every transaction
        self.now = 0
        self.asked = None
        self.decide(0)

    def ask(self, power):
        self.asked = power
        return self.ctl.set_setpoint(power, 3600, self.now)  # on the test's clock

    def decide(self, ms):
        self.now += ms
        step = self.step
        applied = step.decide(self.now, 5000 + self.pile.tel.power, 0)
        step.polled(True, applied)
        self.pile.tel.power = applied  # the converter runs at it until the next decision
        step.meter_polled(self.now, 5000 + applied, applied)
        self.pile.keep_budget()
        return applied

    def run(self, ms, step_ms=1000):
        """Decide every `step_ms` for `ms`, the setpoint renewed every half hour."""
        done = 0
        while done < ms:
            if self.asked is not None and done % 1800000 < step_ms:
                self.ask(self.asked)
            self.decide(step_ms)
            done += step_ms

    def until_closed(self, limit_s=100000):
        """Decide every second until the budget closes discharge; the seconds it took."""
        for second in range(limit_s):
            if self.decide(1000) == 0:
                return second
        raise AssertionError("the budget never closed discharge")


def test_a_spent_daily_budget_closes_discharge_whatever_is_asked():
    owner = Owner(budget_wh_day=100)
    owner.ask(-3600)  # 1 Wh a second
    owner.until_closed()
    ctl = owner.ctl
    assert ctl.budget.day_wh() == 100 and ctl.budget.left_wh(owner.pile.cfg) == 0
    assert ctl.env.max_discharge == 0 and ctl.reasons & limits.REASON_V2G_BUDGET
    target, reasons = owner.ask(-11000)  # the aggregator asks again, for more
    assert target == 0 and reasons & limits.REASON_V2G_BUDGET
    owner.run(60000)
    assert ctl.budget.day_wh() == 100  # nothing more went out
    target, _ = owner.ask(2000)  # charging is not the budget's business
    assert target == 2000 and ctl.env.max_charge > 0


def test_without_a_budget_nothing_closes_but_the_counters_run():
    owner = Owner()
    assert owner.pile.cfg.budget_day_wh == owner.pile.cfg.budget_week_wh == NO_BUDGET
    owner.ask(-3600)
    owner.run(200000)
    assert owner.ctl.applied == -3600 and not owner.ctl.reasons & limits.REASON_V2G_BUDGET
    assert owner.ctl.budget.day_wh() == 199  # the first second came before the setpoint
    assert owner.ctl.budget.left_wh(owner.pile.cfg) == NO_BUDGET


def test_the_larger_of_commanded_and_measured_discharge_counts():
    owner = Owner()
    tel = owner.pile.tel
    tel.power = -7200  # the converter discharges on its own: 2 Wh a second
    owner.ctl.decide(owner.now + 10000, tel, True, 5000, 0)
    assert owner.ctl.budget.day_wh() == 20
    tel.power = -7200  # a reading from before the converter fell silent is not counted
    owner.ctl.decide(owner.now + 20000, tel, False, 5000, 0)
    assert owner.ctl.budget.day_wh() == 20


def hours_until_open(budget, cfg):
    hours = 0
    while budget.closes(cfg):
        budget.run(HOUR_MS // 4, 0)
        hours += 0.25
    return hours


def test_the_day_is_24_to_25_hours_of_run_time():
    cfg = Config({"budget_wh_day": 1000})
    budget = Budget()
    budget.run(HOUR_MS // 2, 2000)  # half an hour at 2 kW
    assert budget.day_wh() == 1000 and budget.spent(cfg) == SPENT_DAY and budget.closes(cfg)
    assert hours_until_open(budget, cfg) == 24.5  # from 0.5 h to 25 h of run time
    assert budget.day_wh() == 0 and budget.week_wh() == 1000


def test_the_week_is_7_to_8_days_and_counts_cycles_of_the_battery():
    cfg = Config({"battery_capacity_wh": 10000, "budget_cycles_week_pct": 30})
    assert cfg.budget_week_wh == 3000 and cfg.budget_day_wh == NO_BUDGET  # 0.3 cycles
    budget = Budget()
    for _ in range(3):  # a kWh a day
        budget.run(HOUR_MS, 1000)
        budget.run(23 * HOUR_MS, 0)
    assert budget.week_wh() == 3000 and budget.spent(cfg) == SPENT_WEEK
    assert budget.day_wh() == 1000  # the last day's alone
    # the first kWh (1 to 2 h of run time) ages out once 7 whole days follow its own
    assert hours_until_open(budget, cfg) + 72 == 8 * 24
    assert budget.week_wh() == 2000


def test_counters_survive_a_reboot_with_the_reserve_counted():
    with FreshState() as state:
        owner = Owner(Store(state), budget_wh_day=5000)
        owner.ask(-3600)
        owner.run(80000)  # 79 Wh: one save, at 75
        assert "budget.json" in os.listdir(state)
        owner.run(60000)  # 60 more, not yet saved: a power cut now
        counted = owner.ctl.budget.day_wh()
        again = Pile("budget-001", Store(state))
        assert again.ctl.budget.day_wh() == 75 + RESERVE_WH >= counted
        assert again.ctl.budget.closes(again.cfg)  # discharge waits for the first save
        again.keep_budget()
        assert not again.ctl.budget.closes(again.cfg)
        assert again.ctl.budget.day_wh() == 75 + RESERVE_WH  # the save added no more


def test_a_rebooting_pile_never_gets_a_fresh_day():
    with FreshState() as state:
        owner = Owner(Store(state), budget_wh_day=300)
        owner.ask(-3600)
        owner.run(20 * HOUR_MS, HOUR_MS // 4)  # 20 hours: 20 of the budget's day run
        for _ in range(8):  # then a reboot every 10 minutes
            owner = Owner(Store(state))
            owner.ask(-3600)
            owner.run(600000, 60000)
        assert owner.ctl.budget.closes(owner.pile.cfg)  # 21 h 20 of run time in all
        assert owner.ctl.budget.day_wh() >= 300


class FailingStore(Store):
    """A flash whose writes fail while `failing` is set."""

    failing = False

    def save(self, name, value):
        if self.failing:
            raise OSError(5)
        Store.save(self, name, value)


def test_discharge_waits_for_a_flash_that_cannot_save():
    with FreshState() as state:
        store = FailingStore(state)
        owner = Owner(store, budget_wh_day=5000)
        store.failing = True
        owner.ask(-3600)
        owner.until_closed()
        budget = owner.ctl.budget
        assert budget.day_wh() == 100 and budget.left_wh(owner.pile.cfg) == 4900
        assert owner.ctl.reasons & limits.REASON_V2G_BUDGET and owner.pile.flash_errors
        # a cut now finds the boot's save (0 Wh and the reserve): what was counted, and a
        # period of up to half the reserve after the last decision that discharged
        assert Pile("budget-001", Store(state)).ctl.budget.day_wh() >= 100 + RESERVE_WH // 2
        store.failing = False
        owner.run(2000)
        assert owner.ctl.applied == -3600 and not owner.ctl.reasons & limits.REASON_V2G_BUDGET


def test_counters_that_cannot_be_read_count_as_spent():
    for text in ("{not json", '{"format": 1, "hours": [1]}'):
        with FreshState() as state:
            with open(state + "/budget.json", "w") as f:
                f.write(text)
            pile = Pile("budget-001", Store(state))
            assert "budget.json.bad" in os.listdir(state)
            assert "V2G budget" in pile.problems[-1]
            assert [events.EVENT_STORE_DAMAGED, 5] in [e[2:] for e in logged(pile)]
            pile.set_config({"budget_wh_day": 20000})
            assert pile.ctl.budget.closes(pile.cfg) and pile.ctl.budget.spent(pile.cfg)


def test_the_budget_is_logged_when_spent_and_when_open_again():
    owner = Owner(budget_wh_day=50)
    owner.ask(-3600)
    owner.until_closed()
    owner.asked = None
    owner.run(25 * HOUR_MS, HOUR_MS // 4)
    budget = [e[3] for e in logged(owner.pile) if e[2] == events.EVENT_BUDGET]
    assert budget == [SPENT_DAY, 0]


def test_saves_are_bounded_by_energy_hours_and_minutes():
    with FreshState() as state:
        owner = Owner(Store(state), budget_wh_day=100000)
        store = owner.pile.store
        before = store.writes
        owner.run(HOUR_MS - 2000, 250)  # an idle hour at the board's period
        assert store.writes - before == 5  # every 10 minutes of run time
        before = store.writes
        owner.ask(-11000)  # 3 Wh a second: a save every 75 Wh (25 s), the hour's end too
        owner.run(HOUR_MS)
        assert 140 <= store.writes - before <= 150


def test_the_owner_sets_the_budget_with_the_link_key_within_the_technicians_bounds():
    pile = pile_with_ev()
    pile.set_key(LINK)
    pile.set_key(TECH, SLOT_TECHNICIAN)
    owner = Host(pile, LINK, may_provision=False)  # the link key: the owner's tools share it
    technician = Host(pile, TECH)
    assert owner.send(CONFIG_SET, {2: {"budget_wh_day": 8000}})[0] == CONFIG
    assert pile.cfg.budget_day_wh == 8000
    set_by = [e[3] for e in logged(pile) if e[2] == events.EVENT_CONFIG_KEY][-1]
    assert set_by >> 8 == 1  # the link key's slot, for the owner to see
    for changes in ({"budget_wh_day": 7000, "min_soc": 30}, {"budget_max_wh_day": 9000},
                    {"reserve_soc": 20}):
        error = owner.send(CONFIG_SET, {2: changes})
        assert error[3] == ERR_AUTH and "technician" in error[4], error
    assert pile.cfg.budget_wh_day == 8000 and pile.cfg.min_soc == 20
    error = technician.send(CONFIG_SET, {2: {"budget_max_wh_day": 6000}})
    assert error[3] == ERR_OUT_OF_RANGE and error[4].startswith("budget_max_wh_day:"), error
    assert technician.send(CONFIG_SET, {2: {"budget_max_wh_day": 6000,
                                            "budget_wh_day": 6000}})[0] == CONFIG
    error = owner.send(CONFIG_SET, {2: {"budget_wh_day": 7000}})
    assert error[3] == ERR_OUT_OF_RANGE and "budget_max_wh_day (6000)" in error[4], error
    assert owner.send(CONFIG_SET, {2: {"budget_cycles_week_pct": 150,
                                       "owner_reserve_soc": 60}})[0] == CONFIG
    assert pile.cfg.budget_week_wh == 90000  # 1.5 cycles of 60 kWh
    error = technician.send(CONFIG_SET, {2: {"max_soc": 50}})
    assert error[3] == ERR_OUT_OF_RANGE and "owner_reserve_soc" in error[4], error


def test_the_pile_makers_limits_bound_the_budget_too():
    pile = Pile("bounded-001", bounds={"budget_max_wh_day": [0, 20000]})
    assert pile.cfg.budget_max_wh_day == 20000 and pile.cfg.budget_day_wh == 20000
    error = Host(pile).send(CONFIG_SET, {2: {"budget_max_wh_day": 30000}})
    assert error[3] == ERR_OUT_OF_RANGE and "0..20000" in error[4], error


def test_the_owners_reserve_floors_every_departures_reserve():
    pile = pile_with_ev()  # 60 %
    pile.set_config({"owner_reserve_soc": 70})
    assert pile.setpoint(-3000, 60)[0] == -3000  # no departure: no reserve to floor
    target, reasons = pile.setpoint(-3000, 60, departure_s=36000, reserve_soc=40)
    assert target == 0 and reasons & limits.REASON_DEPARTURE_RESERVE
    target, _ = pile.setpoint(-3000, 60, departure_s=600)  # 10 % of 60 kWh in 10 minutes
    assert target > 0 and pile.ctl.env.must_charge  # charge, whatever was asked


def test_a_setpoint_acked_after_the_budget_closed_says_so():
    owner = Owner(budget_wh_day=10)
    owner.ask(-3600)
    owner.until_closed()
    host = Host(owner.pile)
    ack = host.send(SETPOINT, {2: -5000, 3: 60})
    assert ack[0] == ACK and ack[3] == 0 and ack[4] & limits.REASON_V2G_BUDGET


def test_a_change_to_what_the_pile_already_holds_writes_nothing():
    with FreshState() as state:
        pile = Pile("budget-002", Store(state))
        pile.set_config({"budget_wh_day": 8000})
        writes, logged_before = pile.store.writes, len(logged(pile))
        for _ in range(20):  # a host that sends the same owner's setting over and over
            pile.set_config({"budget_wh_day": 8000})
        assert pile.store.writes == writes and len(logged(pile)) == logged_before
        pile.set_config({"budget_wh_day": 8000, "owner_reserve_soc": 30})  # one key new
        assert pile.store.writes == writes + 1 and pile.cfg.owner_reserve_soc == 30
