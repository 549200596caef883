"""The predictor node's ``/diagnostics`` (a mixin of :class:`~astra_ros.ros.predictor_node.PredictorNode`):
inputs and their silences, the input accounting, the forecasts and the experts, once a second."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from astra_ros.ros.predictor_core import state_kind
from astra_ros.ros.predictor_params import INPUTS, LOG_THROTTLE_S
from astra_ros.ros.topic_names import diagnostic_prefix

# A forecast covering less than horizon_s by more than this many frame intervals is reported.
COVERAGE_SLACK_FRAMES = 1.5


class PredictorDiagnostics:
    """The 1 Hz diagnostics of the predictor; the node's state lives on the node (``self``)."""

    # ------------------------------------------------------------------ diagnostics
    def _on_diagnostics_tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            kind = state_kind(self._params["action_modality"])
            required = ("image", "pose") if kind == "pose" else ("image", self._params["twist_source"])
            went_silent, silent = self._inputs.newly_silent(required, now, self._params["input_timeout_s"])
            refusing = self._refusals.refusing({name: self._ledger.received[name] for name in required}, now,
                                               self._params["input_timeout_s"])
            refusal_reasons = dict(self._refusals.last_reason)
            for name in went_silent:
                self._dropped[f"{name}_timeout"] += 1
            rates = self._inputs.rates_hz(now)
            input_skipped = Counter(self._ledger.skipped)
            dropped = self._dropped + input_skipped
            received, used, skipped_total = self._ledger.totals()
            per_stream = {name: (self._ledger.received[name], self._ledger.used[name]) for name in INPUTS}
            pending = self._pairer.pending_images + len(self._unsent)
            lost = Counter(self._lost)
            restarts = Counter(self._restarts)
            jumps_undone = {name: guard.jumps_undone for name, guard in self._stamps.items() if guard.jumps_undone}
            fallback_silent = self._state_silent(now)
            fallback_frames, feeding = self._fallback_frames, self._feeding_stream()
            skipped = Counter(self._skipped)
            latencies = list(self._latencies)
            forecast_stats, not_caught_up, gaps = dict(self._forecast_stats), self._not_caught_up, self._grid.gaps
            recent_coverage = list(self._recent_coverage_s)
            new_latencies, self._new_latencies = self._new_latencies, []
            usage = dict(self._expert_usage)
            predictions, window_len = self._predictions, len(self._window)
            imagine_calls = Counter(self._imagine_calls)
            last_error = self._last_error
        if went_silent:
            consequence = ("predictions pause until images return" if "image" in went_silent
                           else "predictions continue assuming no motion until it returns")
            names = ", ".join(self._topics.get(name, name) for name in went_silent)
            self.get_logger().warning(f"no messages on {names} for {self._params['input_timeout_s']} s; "
                                      f"{consequence}")
        clock_now = self.get_clock().now()
        stamp = clock_now.to_msg()
        prefix = diagnostic_prefix(self)
        inputs = DiagnosticStatus(name=f"{prefix}: inputs", hardware_id=prefix)
        inputs.level = DiagnosticStatus.WARN if silent or refusing else DiagnosticStatus.OK
        inputs.message = (f"silent: {', '.join(self._topics.get(n, n) for n in silent)}" if silent
                          else "inputs arriving")
        if refusing:  # arriving, so not silent, but none of it reaches the model
            refused_text = "; ".join(f"every message on {self._topics.get(n, n)} refused for {s:.0f} s "
                                     f"({refusal_reasons.get(n, 'refused')})" for n, s in sorted(refusing.items()))
            inputs.message += f"; {refused_text}"
        if clock_now.nanoseconds == 0 and self.get_parameter("use_sim_time").value:
            # This timer runs on the steady clock, so it still reports when /clock never comes.
            inputs.level = DiagnosticStatus.WARN
            inputs.message += "; use_sim_time is true but no /clock has arrived (start the simulator, or play the bag with --clock)"
            self.get_logger().warning("use_sim_time is true but no /clock has arrived: the node clock stands at 0, so "
                                      "forecasts cannot be placed in time (start the simulator, or play the bag with "
                                      "--clock)", throttle_duration_sec=LOG_THROTTLE_S)
        if fallback_silent:
            inputs.message += (f"; fallback: {feeding} silent, images paired with "
                               + ("a zero twist" if kind == "twist" else "the last pose held"))
        inputs.values = [KeyValue(key=f"rate_{name}_hz", value=f"{rate:.2f}") for name, rate in rates.items()]
        inputs.values += [KeyValue(key=f"dropped_{reason}", value=str(count)) for reason, count in sorted(dropped.items())]
        inputs.values.append(KeyValue(key="window_frames", value=str(window_len)))
        inputs.values += [KeyValue(key=f"topic_{name}", value=topic) for name, topic in sorted(self._topics.items())]
        inputs.values += [KeyValue(key="fallback_active", value=str(fallback_silent).lower()),
                          KeyValue(key="fallback_frames", value=str(fallback_frames))]
        inputs.values += [KeyValue(key=f"restarts_{name}", value=str(count)) for name, count in sorted(restarts.items())]
        inputs.values += [KeyValue(key=f"stamp_jumps_undone_{name}", value=str(count))
                          for name, count in sorted(jumps_undone.items())]
        # Every message a callback saw is used or skipped by reason, or still pending (queued images).
        accounting = DiagnosticStatus(name=f"{prefix}: input accounting", hardware_id=prefix)
        accounted = received == used + skipped_total + pending
        accounting.level = DiagnosticStatus.OK if accounted else DiagnosticStatus.ERROR
        accounting.message = (f"{received} received = {used} used + {skipped_total} skipped + {pending} pending"
                              if accounted else f"{received} received != {used} used + {skipped_total} skipped + "
                              f"{pending} pending")
        accounting.values = [KeyValue(key="inputs_received", value=str(received)),
                             KeyValue(key="inputs_used", value=str(used)),
                             KeyValue(key="inputs_skipped", value=str(skipped_total)),
                             KeyValue(key="inputs_pending", value=str(pending)),
                             KeyValue(key="inputs_accounted", value=str(accounted).lower())]
        for name, (got, took) in per_stream.items():
            accounting.values += [KeyValue(key=f"received_{name}", value=str(got)), KeyValue(key=f"used_{name}", value=str(took))]
        accounting.values += [KeyValue(key=f"input_skipped_{reason}", value=str(count))
                              for reason, count in sorted(input_skipped.items())]
        accounting.values += [KeyValue(key=f"lost_in_transport_{name}", value=str(count)) for name, count in sorted(lost.items())]
        prediction = DiagnosticStatus(name=f"{prefix}: prediction", hardware_id=prefix)
        prediction.level = DiagnosticStatus.ERROR if skipped["model_error"] and not predictions else (
            DiagnosticStatus.OK if predictions else DiagnosticStatus.WARN)
        prediction.message = f"{predictions} predictions" + (f"; last error: {last_error}" if last_error else "")
        prediction.values = [KeyValue(key="predictions", value=str(predictions)),
                             KeyValue(key="frame_interval_s", value=f"{self._interval_s:g}"),
                             KeyValue(key="frame_gaps", value=str(gaps)),
                             KeyValue(key="forecasts_not_caught_up", value=str(not_caught_up))]
        # The newest forecast against the clock when it was published: how far ahead its first and last frame lie.
        prediction.values += [KeyValue(key=f"last_{name}", value=f"{value:.3f}") for name, value in forecast_stats.items()]
        if latencies:
            prediction.values += [KeyValue(key="latency_last_s", value=f"{latencies[-1]:.4f}"),
                                  KeyValue(key="latency_mean_s", value=f"{np.mean(latencies):.4f}")]
        # Every prediction's model latency once: a monitor that reads each message loses none.
        prediction.values.append(KeyValue(key="latency_new_ms", value=",".join(f"{1e3 * t:.1f}" for t in new_latencies)))
        prediction.values += [KeyValue(key=f"skipped_{reason}", value=str(count)) for reason, count in sorted(skipped.items())]
        prediction.values += [KeyValue(key=f"imagine_{kind_}", value=str(count)) for kind_, count in sorted(imagine_calls.items())]
        if getattr(getattr(self._model, "config", None), "rotation_reference", False):
            prediction.values.append(KeyValue(key="intrinsics", value=self._intrinsics_source))
        if getattr(self, "_arm_camera", None) is not None:
            prediction.values.append(KeyValue(key="arm_camera", value=self._arm_camera.source))
        experts = DiagnosticStatus(name=f"{prefix}: experts", hardware_id=prefix, level=DiagnosticStatus.OK,
                                   message="fraction of action tokens routed to each expert, per modality")
        experts.values = [KeyValue(key=f"{modality}_expert_{index}", value=f"{share:.3f}")
                          for modality, shares in sorted(usage.items()) for index, share in enumerate(shares)]
        if not_caught_up and prediction.level == DiagnosticStatus.OK and forecast_stats.get("lead_s", 0.0) < 0:
            prediction.level = DiagnosticStatus.WARN
            prediction.message += ("; images are more than max_catch_up_s behind the node clock: forecasts start at "
                                   "the newest frame (replay bags with --clock and use_sim_time:=true)")
        horizon_s = self._params["horizon_s"]
        # The median of the last forecasts: one slow forecast is jitter, a run of them is a model that
        # cannot keep up (catching up is capped at max_catch_up_s).
        coverage_s = float(np.median(recent_coverage)) if recent_coverage else None
        if (coverage_s is not None and coverage_s < horizon_s - COVERAGE_SLACK_FRAMES * self._interval_s
                and prediction.level == DiagnosticStatus.OK):
            prediction.level = DiagnosticStatus.WARN
            prediction.message += (f"; forecasts reach only {coverage_s:.2f} s ahead (median of the last "
                                   f"{len(recent_coverage)}), less than horizon_s {horizon_s:g} s (the last took "
                                   f"{forecast_stats.get('latency_s', 0.0):.2f} s: the model is slower than real "
                                   "time here; more num_threads, a lower horizon_s or a GPU)")
        if fallback_silent and prediction.level == DiagnosticStatus.OK:
            prediction.level = DiagnosticStatus.WARN
            prediction.message += f"; fallback: no {feeding}, assuming no motion"
        array = DiagnosticArray(status=[inputs, accounting, prediction, experts])
        array.header.stamp = stamp
        self._diagnostics_pub.publish(array)

