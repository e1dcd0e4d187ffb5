"""The discrete PID controller of exposure pacing: pure maths, no I/O (the Redis side is ``control/pacing.py``).

One ``PidController.step`` per control interval turns the tracking error ``e_k`` (positive: behind the target,
in the caller's units) into a clamped output ``u_k``::

    I_k = γ · I_{k-1} + e_k                        error discount γ ∈ (0, 1]: old errors fade geometrically
    D_k = e_k − e_{k-1}                            how fast the error grows (0 on the first step)
    u_k = clamp(bias + kp·e_k + ki·I_k + kd·D_k, out_min, out_max)

* **Anti-windup** (conditional integration): when the unclamped output is beyond a limit and ``e_k`` pushes
  it further out, ``e_k`` is not added to the integral (it still decays by γ), so a long saturation (an item
  that cannot be served faster, a cap reached) does not wind the integral up and the output leaves the limit
  as soon as the error changes sign.
* **Dead band**: ``|e_k| <= dead_band`` (when ``dead_band > 0``) leaves output and integral as they were (only ``e_{k-1}`` moves on),
  so measurement noise around the target does not make the output jitter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class PidGains:
    """Gains of one PID loop; the units of ``kp``, ``ki``, ``kd`` are output units per error unit."""

    kp: float
    ki: float
    kd: float
    integral_discount: float = 1.0  # γ: the integral is multiplied by it every step (1: a plain sum)
    dead_band: float = 0.0  # errors up to this size (error units) change nothing

    def __post_init__(self) -> None:
        if min(self.kp, self.ki, self.kd, self.dead_band) < 0:
            raise ValueError(f"PID gains and dead band must be >= 0, got {self}")
        if not 0.0 < self.integral_discount <= 1.0:
            raise ValueError(f"integral_discount must be in (0, 1], got {self.integral_discount}")


@dataclass(frozen=True)
class PidState:
    """What a PID loop carries from one interval to the next."""

    integral: float = 0.0  # I_k, error units · intervals
    prev_error: float | None = None  # e_{k-1}; None before the first step (no derivative kick)
    output: float = 0.0  # u_k, clamped


@dataclass(frozen=True)
class PidController:
    """A PID loop with conditional-integration anti-windup, output clamping, error discount and dead band."""

    gains: PidGains
    out_min: float
    out_max: float
    bias: float = 0.0  # output at zero error and zero integral

    def __post_init__(self) -> None:
        if not self.out_min <= self.bias <= self.out_max:
            raise ValueError(
                f"need out_min <= bias <= out_max, got {self.out_min}, {self.bias}, {self.out_max}"
            )

    def initial(self) -> PidState:
        """The state before the first step: empty integral, output at the bias."""
        return PidState(output=self.bias)

    def unclamped(self, integral: float, error: float, derivative: float) -> float:
        g = self.gains
        return self.bias + g.kp * error + g.ki * integral + g.kd * derivative

    def step(self, state: PidState, error: float) -> PidState:
        """Advance one control interval with the tracking error ``error`` (positive: output should rise)."""
        g = self.gains
        if g.dead_band > 0 and abs(error) <= g.dead_band:
            return replace(state, prev_error=error)
        derivative = 0.0 if state.prev_error is None else error - state.prev_error
        decayed = g.integral_discount * state.integral
        integral = decayed + error
        raw = self.unclamped(integral, error, derivative)
        if (raw > self.out_max and error > 0) or (raw < self.out_min and error < 0):
            integral = decayed  # anti-windup: do not integrate further into saturation
            raw = self.unclamped(integral, error, derivative)
        output = min(self.out_max, max(self.out_min, raw))
        return PidState(integral=integral, prev_error=error, output=output)
