"""What validation found: `Violation`s, each located by shard, sample and instance; a `ValidationReport`."""

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule, located as precisely as possible."""

    path: str
    sample_id: str | None
    instance_id: int | None
    rule: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"sample {self.sample_id}" if self.sample_id is not None else ""
        if self.instance_id is not None:
            where += f" instance {self.instance_id}"
        return ": ".join(p for p in (self.path, where.strip(), f"{self.message} [{self.rule}]") if p)


@dataclass
class ValidationReport:
    """What `validate_dataset` found; `ok` is True when there is no error (warnings allowed)."""

    root: str
    max_errors: int = 1000
    violations: list[Violation] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(severity, rule) -> violations found, also those past `max_errors`."""
    shards: int = 0
    rows: int = 0
    instances: int = 0

    def add(self, violation: Violation) -> None:
        self.counts[(violation.severity, violation.rule)] += 1
        if len(self.violations) < self.max_errors:
            self.violations.append(violation)

    @property
    def errors(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "error"]

    @property
    def warnings(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "warning"]

    @property
    def num_errors(self) -> int:
        return sum(n for (severity, _rule), n in self.counts.items() if severity == "error")

    @property
    def ok(self) -> bool:
        return self.num_errors == 0

    def rules(self, severity: str = "error") -> set[str]:
        """Names of the rules broken at `severity`."""
        return {rule for (sev, rule) in self.counts if sev == severity}

    def summary(self) -> str:
        """A plain-text table: totals, then one line per broken rule."""
        lines = [("dataset", self.root), ("shards", self.shards), ("rows", self.rows),
                 ("instances", self.instances), ("errors", self.num_errors),
                 ("warnings", sum(n for (sev, _r), n in self.counts.items() if sev == "warning"))]
        lines += [(f"{sev} {rule}", n) for (sev, rule), n in sorted(self.counts.items())]
        width = max(len(name) for name, _ in lines)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in lines)
