"""Sweep files: a base experiment, fixed overrides, and a search space over dotted config keys."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from crisscross.config.schema import Section

Pair = Annotated[tuple[float, float], Field(strict=False)]
Scalar = bool | int | float | str | None
# what the online monitor reports; "mean" is the mean of the video and audio figures
SweepMetric = Literal[
    "knn/mean", "knn/video", "knn/audio", "probe/mean", "probe/video", "probe/audio"
]


class Domain(Section):
    """Where one key's values come from: exactly one of the five forms."""

    grid: list[Scalar] | None = Field(None, min_length=1)
    """Every value, each in its own trial (grid search; crossed with the other grid keys)."""
    choice: list[Scalar] | None = Field(None, min_length=1)
    """One value drawn per trial."""
    uniform: Pair | None = None
    """[low, high]: a float drawn uniformly."""
    loguniform: Pair | None = None
    """[low, high], both > 0: a float drawn uniformly in log space (learning rates)."""
    randint: Annotated[tuple[int, int], Field(strict=False)] | None = None
    """[low, high]: an integer drawn from low to high, both included."""

    @model_validator(mode="after")
    def _one_form(self) -> Domain:
        given = [name for name in FORMS if getattr(self, name) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "domain",
                "give exactly one of {forms} (got {given})",
                {"forms": ", ".join(FORMS), "given": ", ".join(given) or "none"},
            )
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and not bounds[0] <= bounds[1]:
            raise PydanticCustomError(
                "domain", "[low, high] needs low <= high, got {bounds}", {"bounds": list(bounds)}
            )
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise PydanticCustomError(
                "domain",
                "loguniform bounds must be > 0, got {bounds}",
                {"bounds": list(self.loguniform)},
            )
        return self

    @property
    def form(self) -> str:
        return next(name for name in FORMS if getattr(self, name) is not None)

    def candidates(self) -> list[Any]:
        """Values a trial may get that bound the domain: every listed value, or both ends."""
        if self.grid is not None or self.choice is not None:
            return list(self.grid if self.grid is not None else self.choice or [])
        return list(self.uniform or self.loguniform or self.randint or ())


FORMS = ("grid", "choice", "uniform", "loguniform", "randint")
CASE = "case"  # the trial parameter that names a sweep's case


def expand_case(params: dict[str, Any], cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A trial's parameters as dotted overrides: its named case (if any) expanded."""
    out = {k: v for k, v in params.items() if k != CASE}
    return (dict(cases[params[CASE]]) | out) if CASE in params else out


class SearchConfig(Section):
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    """grid: every combination of the grid lists; random: draws from the domains; optuna: a
    model-based search (Optuna's TPE through Ray Tune) over choice/uniform/loguniform/randint."""
    num_samples: int = Field(1, ge=1)
    """Trials to draw (random, optuna); for grid, how many times the whole grid is run."""
    metric: SweepMetric = "knn/mean"
    """The downstream accuracy trials are compared on (the online monitor's), never the loss."""
    max_concurrent_trials: int | None = Field(None, ge=1)
    """At most this many trials at once; unset: as many as the cluster's resources hold."""
    seed: int = Field(0, ge=0)
    """Seed of the random and model-based searches."""


class AshaConfig(Section):
    """ASHA early stopping on the monitor's metric, rung by rung in epochs."""

    enabled: bool = True
    """Stop weak trials early (off: every trial runs all its epochs)."""
    grace_period: int = Field(1, ge=1)
    """Epochs every trial runs before it can be stopped."""
    reduction_factor: float = Field(2.0, gt=1.0)
    """Keep the best 1/this of the trials at each rung."""


class FinalConfig(Section):
    """Optional downstream evaluation of the best trials once the search has ended."""

    top_k: int = Field(0, ge=0)
    """Evaluate this many best trials (by search.metric); 0: none."""
    svm: str | None = None
    """An svm experiment file (relative to the sweep file) run on each of them, all folds."""
    finetune: str | None = None
    """A finetune experiment file (relative to the sweep file) run on each of them, split 1."""
    roots: dict[Literal["svm", "finetune"], str] = Field(default_factory=dict)
    """Dataset roots by protocol ({svm: DIR, finetune: DIR}); unset: the experiment's own
    data.root, else the monitor's set of that dataset (audio_root, or video_root)."""

    @model_validator(mode="after")
    def _something_to_run(self) -> FinalConfig:
        if self.top_k and not (self.svm or self.finetune):
            raise PydanticCustomError(
                "final",
                "final.top_k is {k} but neither final.svm nor final.finetune names an experiment",
                {"k": self.top_k, "key": "top_k"},
            )
        return self


class SweepConfig(Section):
    """A whole sweep: what to vary, how to search, how to stop, where to write."""

    def overrides(self, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's parameters as dotted config overrides: its case expanded, the rest as is."""
        return expand_case(params, self.cases)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Sweep name: the Tune experiment folder, the MLflow parent run, the trials' run names."""
    base: str = Field(min_length=1)
    """The pretraining experiment every trial starts from (relative to the sweep file)."""
    fixed: dict[str, Any] = Field(default_factory=dict, alias="set")
    """Dotted overrides applied to every trial, written `set:` (e.g. data.root, optim.epochs)."""
    space: dict[str, Domain] = Field(default_factory=dict)
    """The search space: dotted config key -> its domain."""
    cases: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")], dict[str, Scalar]
    ] = Field(default_factory=dict)
    """Named sets of dotted overrides, each the config of its own trials (crossed with the grid
    of `space`): the rows of an ablation, e.g. `intra_only: {loss.sync: false, loss.async:
    false}`. A trial's `case` parameter names its case."""
    search: SearchConfig = SearchConfig()
    asha: AshaConfig = AshaConfig()
    final: FinalConfig = FinalConfig()
    synthetic: bool = False
    """Train and monitor on the quickstart's synthetic sets (written once under output_dir)."""
    output_dir: str = Field("runs/sweeps", min_length=1)
    """Where the sweep folder goes (Tune state, trial checkpoints, plots, best.yaml); a relative
    path is taken from the working directory, like run.output_dir."""

    @model_validator(mode="after")
    def _searchable(self) -> SweepConfig:
        if not self.space and not self.cases:
            raise PydanticCustomError(
                "empty_space",
                "the search space is empty: give at least one dotted config key with its "
                "domain, e.g. loss.w_sync: {{grid: [0.5, 1.0]}} (or named cases)",
                {"key": "space"},
            )
        empty = [name for name, overrides in self.cases.items() if not overrides]
        if empty:
            raise PydanticCustomError(
                "empty_case",
                "case {name} sets nothing: give it at least one dotted key, e.g. "
                "{{loss.intra: false}}",
                {"name": empty[0], "key": f"cases.{empty[0]}"},
            )
        forms = {key: domain.form for key, domain in self.space.items()}
        algorithm = self.search.algorithm
        if algorithm == "grid":
            bad = [k for k, f in forms.items() if f != "grid"]
            hint = "list the values as grid: [...], or use search.algorithm random or optuna"
        elif algorithm == "optuna":
            bad = [k for k, f in forms.items() if f == "grid"]
            hint = "optuna draws its own values: write choice: [...] instead of grid"
        else:
            bad = []
        if bad:
            raise PydanticCustomError(
                "domain_form",
                "search.algorithm {algorithm} cannot use {keys} ({hint})",
                {"algorithm": algorithm, "keys": ", ".join(bad), "hint": hint, "key": "space"},
            )
        return self
