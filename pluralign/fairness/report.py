"""The audit report: one msgspec struct for the CLI, the admin API, stored audit jobs and the dashboard."""

from __future__ import annotations

import msgspec

from pluralign.data.record import Persisted
from pluralign.data.text import answer_key

# 1: the first report; 2: `withheld_groups` (a report of schema 1 reads as one with none withheld); 3: the 95% intervals
# (`*_interval`: a report of schema 1 or 2 reads as one with none, null); 4: `interval_min_users` (a report of schema 3
# reads with its intervals of smaller groups withheld, `small_intervals_withheld`, and one of schema 1-3 with its groups
# of one user suppressed, `one_user_groups_suppressed`). A release
# reads every schema up to its own and refuses a later one by its number, before its fields (which
# `forbid_unknown_fields` would refuse as an "unknown field", as if the file were damaged).
AUDIT_SCHEMA_VERSION = 4

# Groups (and the overall) of fewer users carry no 95% interval. Of n users a percentile bootstrap over users draws a
# resample of one user's comparisons alone with chance n * n**-n (50% at 2 users, 11% at 3, 1.6% at 4, 0.13% at 5):
# at 2 or 3 users the interval's 2.5% and 97.5% ends are exactly the worst and the best user's own accuracy, and at 4
# they are resamples three quarters one user's. A cluster bootstrap of so few clusters also has few distinct resamples
# (35 at 4 users) and covers far less than 95% (Cameron, Gelbach & Miller 2008, "Bootstrap-based improvements for
# inference with clustered errors"): the interval would tell an admin about individuals and little about the group.
# 5 is also the smallest cell that statistical agencies commonly publish. Fixed, not a request's setting: it protects
# the users audited from whoever asks for the audit (an interval of a group of any size would).
INTERVAL_MIN_USERS = 5
# A group of one user is suppressed whatever `min_group_size` says: its figures (accuracy, ECE, win rate) are that
# user's own. From two users on a group's figures are means over several users (so the default `min_group_size` of 1
# shows no one-user group's, and a tenant of one user's overall figures are not that user's)
MIN_SHOWN_USERS = 2
# The `base_model` of an audit's report: names how its figures were computed, and an audit is given its change since
# an earlier one of the same name only (`audit_settings`). `crossfit-logistic` (reports stored by earlier
# releases): the base model on every whitened direction (up to one per ten comparisons), each user's cross-fitting
# half from `tenant/user`, and the personalized model's prior on its weight on the base margin scaled over the whole
# audit. `crossfit-logistic-v2`: the leading directions that predict held-out users best (`held_out_dims`), the half
# from the user id, that prior scaled by each user's own margins. `crossfit-logistic-v3`: as v2, each user's online
# model on at most one whitened direction per ten distinct comparisons (`personal_dims`; the same figures where a
# sample of 20,000 holds 320 or more). A change of method takes a new name
BASE_METHOD = "crossfit-logistic-v3"


class GroupMetrics(Persisted, kw_only=True):
    """How well one group of users is served. Accuracies are over the group's scored comparisons."""

    group: str
    users: int
    comparisons: int
    personalized_accuracy: float  # prequential: each comparison predicted before it is learned from
    base_accuracy: float  # the one-size-fits-all model on the same comparisons
    personalized_ece: float | None
    base_ece: float | None
    win_rate: float | None = None  # personalized response preferred over the base response
    win_comparisons: int = 0  # comparisons between a personalized and a base response
    too_few_comparisons: bool = False  # reported, but not ranked as worst or best
    # [low, high]: 95% percentile-bootstrap intervals over the group's users (each resampled with all of their
    # comparisons, which are not independent; a group of one user: over its comparisons); null in reports before schema 3.
    # A pair, decoded as one: a stored list of another length is a damaged report (decoded, the dashboard's
    # render of it would answer 500). Null too for a group of fewer than the report's
    # `interval_min_users` users: the ends would be its users' own accuracies (INTERVAL_MIN_USERS)
    personalized_accuracy_interval: tuple[float, float] | None = None
    base_accuracy_interval: tuple[float, float] | None = None
    # Brier score (Brier 1950): the mean of (1 - P(the chosen answer wins))^2 over the group's comparisons, 0 best, 0.25
    # for a prediction of 0.5. A proper scoring rule beside accuracy, whose credit rule gives 0 to a prediction a hair
    # below 0.5 (0.4996) and 0.5 to an exact 0.5: here the two cost alike (0.2504 and 0.25). Null in reports of
    # earlier releases (an optional field: the schema is the same)
    personalized_brier: float | None = None
    base_brier: float | None = None

    @property
    def gain(self) -> float:
        return self.personalized_accuracy - self.base_accuracy


class AuditReport(Persisted, kw_only=True):
    """Per-group service quality and the spread across groups."""

    schema_version: int = AUDIT_SCHEMA_VERSION
    group_by: str
    created_at: float
    encoder_id: str
    personalized_model: str
    base_model: str
    users: int
    comparisons: int
    # stored ties, every user's: withheld (None) once a DELETE takes a user out of the report (`without_groups`,
    # `without_unshown`): they are not counted by user, and a new audit's count would give the user's back by subtraction
    ties_skipped: int | None = 0
    since: float | None = None  # only comparisons at or after this time are scored
    # groups with fewer users are suppressed (not reported at all), a group of one user always (MIN_SHOWN_USERS); their
    # users and comparisons are in `users`, `comparisons` and `overall` all the same, until a DELETE of one of their
    # users (`without_unshown`). `overall` is null (withheld) when they hold fewer users than a group shown must: the
    # overall less the groups shown would give their figures away (`withheld_notes`); and whatever `min_group_size` says
    # when the groups of one user hold one user: less the groups an audit with `min_group_size` 1 shows, the overall
    # would be theirs (so an audit asking 3 does not show it)
    min_group_size: int = 1
    min_comparisons: int = 0  # groups with fewer comparisons are flagged too_few_comparisons
    suppressed_groups: int = 0
    # groups taken out after the audit because a user in them was deleted (`without_groups`): their figures were
    # drawn from that user's comparisons too; the overall figures are then withheld (None) for the same reason
    withheld_groups: int = 0
    overall: GroupMetrics | None = None
    groups: list[GroupMetrics] = []
    worst_group: str | None = None  # by personalized accuracy, among groups with enough comparisons
    worst_group_accuracy: float | None = None
    gap: float | None = None  # best minus worst personalized accuracy
    base_worst_group: str | None = None
    base_worst_group_accuracy: float | None = None
    base_gap: float | None = None
    # [low, high]: 95% interval of the gap, the named best group's accuracy minus the named worst's, simultaneous over
    # every pair of ranked groups (they are named after looking: `pluralign.fairness.metrics.range_half_width`), each
    # group's users resampled on their own (`GroupMetrics`); holding 0, the audit cannot tell those groups apart. Null for no gap, for a single
    # group ranked (none to tell it from), in reports before schema 3, and once a DELETE withheld a group (`without_groups`: the resamples are not kept).
    # Null too when a ranked group has fewer than `interval_min_users` users (it has no interval, so no bound over every
    # ranked pair can be drawn)
    gap_interval: tuple[float, float] | None = None
    base_gap_interval: tuple[float, float] | None = None
    # groups (and the overall) of fewer users have no intervals (null), lest their ends give individual users'
    # accuracies away (INTERVAL_MIN_USERS; a report before schema 4 is read with them withheld so)
    interval_min_users: int = INTERVAL_MIN_USERS
    seconds: float = 0.0
    # change since the previous audit by the same attribute (filled by `since_previous`)
    previous_created_at: float | None = None
    worst_group_accuracy_change: float | None = None
    gap_change: float | None = None
    base_gap_change: float | None = None


def extremes(groups: list[GroupMetrics], accuracy) -> tuple[str | None, float | None, float | None]:
    """(the worst group's name, its accuracy, best minus worst) by `accuracy(group)`, among the groups
    with enough comparisons (all of them when none has); (None, None, None) for no group."""
    ranked = [g for g in groups if not g.too_few_comparisons] or groups
    if not ranked:
        return None, None, None
    worst = min(ranked, key=accuracy)
    best = max(ranked, key=accuracy)
    return worst.group, accuracy(worst), accuracy(best) - accuracy(worst)


def withheld_notes(report: AuditReport) -> list[str]:
    """What `report` withholds to protect the users audited, and why, one sentence each (the CLI's table and the
    dashboard say them): the intervals of groups (or the overall) of fewer than `interval_min_users` users, and the
    overall figures of an audit whose suppressed groups hold fewer users than a group shown must, or whose groups of one
    user hold one user (an audit of the same comparisons with `min_group_size` 1 shows every other group). (The overall figures a
    DELETE withheld, `without_groups` / `without_unshown`, are said where the report says so: `withheld_groups`.)"""
    notes = []
    minimum = report.interval_min_users
    if any(g.users < minimum for g in report.groups + ([report.overall] if report.overall else [])):
        notes.append(f"intervals withheld for groups of fewer than {minimum} users: their ends would be their users' own accuracies")
    if report.overall is None and report.suppressed_groups and report.withheld_groups == 0 and report.ties_skipped is not None:
        shown_from = max(report.min_group_size, MIN_SHOWN_USERS)
        if shown_from == MIN_SHOWN_USERS:
            notes.append(f"overall figures withheld: the suppressed groups hold fewer than {shown_from} users, whose figures "
                         "the overall less the groups shown would give away")
        else:  # or withheld for the one-user floor: less the groups an audit with min_group_size 1 shows (`_overall_gives_away`)
            notes.append(f"overall figures withheld: the suppressed groups hold fewer than {shown_from} users, or one user "
                         "alone is in a group of their own, whose figures the overall less the groups shown (by this audit, "
                         "or by one with min_group_size 1) would give away")
    return notes


def without_groups(report: AuditReport, names: set[str]) -> AuditReport:
    """The report without the groups `names` (those a deleted user was in): they are counted in
    `withheld_groups`, their users and comparisons leave the report's counts (never below 0), and the
    overall figures, drawn from their comparisons too, are withheld (None): with them, the overall
    and the groups left would give a withheld group's figures back by subtraction. The worst groups and
    gaps are drawn again from the groups left, without intervals (`gap_interval` None: the resamples are not kept; each
    group's own interval stands). The ties skipped are withheld (None): the deleted user's are among them, not told
    apart (a count left standing would). `names` holding none of its groups: the report unchanged."""
    gone = [g for g in report.groups if g.group in names]
    if not gone:
        return report
    groups = [g for g in report.groups if g.group not in names]
    worst, worst_acc, gap = extremes(groups, lambda g: g.personalized_accuracy)
    base_worst, base_worst_acc, base_gap = extremes(groups, lambda g: g.base_accuracy)
    return msgspec.structs.replace(
        report, groups=groups, worst_group=worst, worst_group_accuracy=worst_acc, gap=gap, base_worst_group=base_worst,
        base_worst_group_accuracy=base_worst_acc, base_gap=base_gap, gap_interval=None, base_gap_interval=None, overall=None, ties_skipped=None, withheld_groups=report.withheld_groups + len(gone),
        users=max(0, report.users - sum(g.users for g in gone)), comparisons=max(0, report.comparisons - sum(g.comparisons for g in gone)))


def without_unshown(report: AuditReport, shown_users: int) -> AuditReport:
    """The report without what the groups it does not show added to it (those suppressed, with fewer than
    `min_group_size` users, and those none of whose comparisons was scored): once a user in one of them is deleted,
    the overall figures, over their comparisons too, are withheld (None), `comparisons` counts the shown groups'
    alone, `users` at most `shown_users` (the users the shown groups hold), and the ties skipped, the deleted user's
    among them, are withheld (None). The groups and their figures stand: they hold none of the unshown groups'
    comparisons. The same call again leaves the report as it is."""
    shown = sum(g.comparisons for g in report.groups)
    return msgspec.structs.replace(report, overall=None, ties_skipped=None, comparisons=min(report.comparisons, shown),
                                   users=min(report.users, shown_users))


def _delta(now: float | None, before: float | None) -> float | None:
    return None if now is None or before is None else now - before


AuditSettings = tuple[str, float | None, int, int, str]  # what an audit is asked for (a job's params say it)


def audit_settings(report: AuditReport) -> tuple[str, float | None, int, int, str, str]:
    """What the audit was asked for: (group_by, since, min_group_size, min_comparisons, the personalized model's kind:
    `logistic` or `pal`: AuditSettings; then how its figures were computed: `base_model`, BASE_METHOD). Two audits of other settings
    are not compared: their worst groups and gaps are drawn from other groups (suppressed or flagged at other sizes),
    other comparisons (`since`), another model or another method, so the difference between them says nothing of how
    the service's fairness changed."""
    since = None if report.since is None else float(report.since)
    # the attribute as the audit reads it (`answer_key`: `région` in NFC or NFD is one attribute, with the same groups)
    return answer_key(report.group_by), since, report.min_group_size, report.min_comparisons, report.personalized_model.removeprefix("online-"), report.base_model


def since_previous(report: AuditReport, history: list[AuditReport]) -> AuditReport:
    """The report with its change against the latest earlier report of the same settings (`audit_settings`: grouped by
    the same attribute, over comparisons since the same time, with the same group thresholds and personalized model).
    Not any earlier audit by the attribute: an audit of last week's comparisons with `min_comparisons` 1 would be
    given its change since one of every comparison with 20."""
    settings = audit_settings(report)
    earlier = [r for r in history if audit_settings(r) == settings and r.created_at < report.created_at]
    if not earlier:
        return report
    previous = max(earlier, key=lambda r: r.created_at)
    return msgspec.structs.replace(
        report,
        previous_created_at=previous.created_at,
        worst_group_accuracy_change=_delta(report.worst_group_accuracy, previous.worst_group_accuracy),
        gap_change=_delta(report.gap, previous.gap),
        base_gap_change=_delta(report.base_gap, previous.base_gap),
    )


class ReportSchemaError(ValueError):
    """A report a later release wrote, of a schema this release does not read: the message names the stored schema
    (a number) and the schemas this release reads. Its own words: shown as they are, where a decode error of a
    damaged file (which may quote the file) is not. A `schema_version` of no known schema (not a number, below 1) is
    such a damaged file: a plain ValueError, whose message quotes what the file holds there."""


class _Versioned(msgspec.Struct):
    schema_version: object = 1  # whatever the file holds, checked before the report's fields


report_encoder = msgspec.json.Encoder()
report_decoder = msgspec.json.Decoder(AuditReport)
_version_decoder = msgspec.json.Decoder(_Versioned)


def decode_report(data: bytes) -> AuditReport:
    """The AuditReport of a report's JSON `data`, of any schema up to AUDIT_SCHEMA_VERSION, read as this one's
    (its `schema_version` set to it: written back, it holds this schema's fields). Raises ReportSchemaError (a
    ValueError) naming the schemas for a report a later release wrote ("audit report schema 4, written by a later
    release of pluralign (this one reads schemas 1-3)"), ValueError for one of no known schema (its message quotes the
    file's `schema_version`: for the log, not a client), and msgspec.DecodeError (a ValueError too) for one that is
    not a report (damaged, or not JSON)."""
    version = _version_decoder.decode(data).schema_version
    if type(version) is int and version > AUDIT_SCHEMA_VERSION:
        raise ReportSchemaError(f"audit report schema {version}, written by a later release of pluralign "
                                f"(this one reads schemas 1-{AUDIT_SCHEMA_VERSION})")
    if not (type(version) is int and 1 <= version <= AUDIT_SCHEMA_VERSION):
        raise ValueError(f"audit report schema {version!r} (this one reads schemas 1-{AUDIT_SCHEMA_VERSION})")  # damaged
    report = report_decoder.decode(data)
    if version == AUDIT_SCHEMA_VERSION:
        return report
    return msgspec.structs.replace(small_intervals_withheld(one_user_groups_suppressed(report)), schema_version=AUDIT_SCHEMA_VERSION)


def one_user_groups_suppressed(report: AuditReport) -> AuditReport:
    """`report` (stored before schema 4) as an audit now gives it: its groups of fewer than MIN_SHOWN_USERS users (one
    user: their figures are that user's) suppressed, counted in `suppressed_groups`, the worst groups and gaps drawn
    from the groups left (without gap intervals: the resamples are not kept), and the overall figures withheld (less the
    groups shown they would give those users' back; which users the groups held the report does not say, so whenever
    one goes). Its counts stand, as a new audit's do: a DELETE of such a user takes their part out (the members file
    lists them with the groups not shown, `without_unshown`). Not read as stored: the dashboard's table of every stored
    audit would name such a group, with its user's accuracy, for as long as the report was kept."""
    alone = [g for g in report.groups if g.users < MIN_SHOWN_USERS]
    if not alone:
        return report
    groups = [g for g in report.groups if g.users >= MIN_SHOWN_USERS]
    worst, worst_acc, gap = extremes(groups, lambda g: g.personalized_accuracy)
    base_worst, base_worst_acc, base_gap = extremes(groups, lambda g: g.base_accuracy)
    return msgspec.structs.replace(
        report, groups=groups, suppressed_groups=report.suppressed_groups + len(alone), overall=None, worst_group=worst,
        worst_group_accuracy=worst_acc, gap=gap, base_worst_group=base_worst, base_worst_group_accuracy=base_worst_acc,
        base_gap=base_gap, gap_interval=None, base_gap_interval=None)


def _no_small_interval(group: GroupMetrics, minimum: int) -> GroupMetrics:
    if group.users >= minimum or (group.personalized_accuracy_interval is None and group.base_accuracy_interval is None):
        return group
    return msgspec.structs.replace(group, personalized_accuracy_interval=None, base_accuracy_interval=None)


def small_intervals_withheld(report: AuditReport) -> AuditReport:
    """`report` with no interval for a group (or the overall) of fewer than INTERVAL_MIN_USERS users, nor for a gap
    among whose ranked groups there is one (a report stored before schema 4, by trial48b's release, gave them: their ends
    were individual users' accuracies). Its `interval_min_users` set to INTERVAL_MIN_USERS."""
    minimum = INTERVAL_MIN_USERS
    groups = [_no_small_interval(g, minimum) for g in report.groups]
    ranked = [g for g in groups if not g.too_few_comparisons] or groups
    small = any(g.users < minimum for g in ranked)
    overall = None if report.overall is None else _no_small_interval(report.overall, minimum)
    return msgspec.structs.replace(
        report, groups=groups, overall=overall, interval_min_users=minimum,
        gap_interval=None if small else report.gap_interval, base_gap_interval=None if small else report.base_gap_interval)
