"""The predictor node's ``~/imagine`` requests (a mixin of :class:`~astra_ros.ros.predictor_node.PredictorNode`):
a request checked and turned into its job's inputs against the live state (the window, the states received
since, the parameters in force). The job itself runs in :class:`~astra_ros.ros.imagine_server.ImagineServer`."""

from __future__ import annotations

from typing import Any

import numpy as np

from astra_ros.ros.live_forecast import SI_ACTION_DIMS, SI_ACTION_UNITS, check_action_range, si_to_model_actions
from astra_ros.ros.predictor_core import ImagineLimits, check_imagine_request


class PredictorImagineRequests:
    """What the imagine server asks of the node; the node's state lives on the node (``self``)."""

    def _count_imagine(self, outcome: str) -> None:
        with self._lock:
            self._imagine_calls[outcome] += 1

    def _prepare_imagine(self, request: Any) -> dict:
        """Check an ``~/imagine`` request and gather what its job needs (the imagine server's thread).

        Raises ValueError with the reason. Candidates apply from now: the catch-up rolls the states in
        force from the window's newest frame up to now (when the request's modality is the live one).
        """
        with self._lock:
            params = dict(self._params)
        live_modality = params["action_modality"]
        modality = request.modality or live_modality
        if modality not in self._model.modalities:
            raise ValueError(f"unknown modality {modality!r}; the model knows {', '.join(self._model.modalities)}")
        si_dim = SI_ACTION_DIMS[modality]
        if int(request.action_dim) != si_dim:
            raise ValueError(f"action_dim must be {si_dim} for {modality} actions ({SI_ACTION_UNITS[modality]}), "
                             f"got {request.action_dim}")
        limits = ImagineLimits(params["max_imagine_batch"], params["max_imagine_horizon"], params["max_imagine_steps"])
        si = check_imagine_request(np.asarray(request.actions, dtype=np.float32), batch=request.batch,
                                   horizon=request.horizon, action_dim=si_dim, expected_dim=si_dim, limits=limits,
                                   denoise_steps=int(request.denoise_steps), guidance_scale=float(request.guidance_scale))
        with self._lock:
            if request.from_live_history and self._live_snapshot is not None:
                snapshot = self._live_snapshot
            elif self._window.full:
                snapshot = self._window.snapshot(live_modality, 1, latest_command=self._future_command(),
                                                 thresholds=self._thresholds(), interval_s=self._interval_s)
            else:
                raise ValueError(f"no history yet: the window has {len(self._window)} of "
                                 f"{self._window.context_frames} observed frames")
            now_ns = self.get_clock().now().nanoseconds
            behind_s = (now_ns - snapshot.last_stamp_ns) * 1e-9
            catch_up_frames = (int(behind_s // self._interval_s)
                               if modality == live_modality and 0 <= behind_s <= self._params["max_catch_up_s"] else 0)
            catch_stamps = snapshot.last_stamp_ns + np.round(
                np.arange(1, catch_up_frames + 1) * self._interval_s * 1e9).astype(np.int64)
            catch_up = (self._actions_at(snapshot, catch_stamps, now_ns) if catch_up_frames
                        else np.zeros((0, self._model.action_dim(modality)), np.float32))
        newest_pose = self._last_pose if self._last_pose is not None else snapshot.states[-1]
        previous_pose = newest_pose if modality in ("camera", "robot") and modality == live_modality else None
        check_action_range(modality, si, self._interval_s, params["action_range_multiple"], previous_pose)
        first_pose = snapshot.states[0] if modality == live_modality and snapshot.states.ndim == 3 else np.eye(4)
        n = catch_up_frames + int(request.horizon)
        stamps = snapshot.last_stamp_ns + np.round(np.arange(1, n + 1) * self._interval_s * 1e9).astype(np.int64)
        live_chunk_s = self._latency.seconds_per_frame
        return {"snapshot": snapshot, "catch_up": catch_up, "modality": modality, "limits": limits,
                "model_actions": si_to_model_actions(modality, si, self._interval_s, first_pose),
                "model_dim": self._model.action_dim(modality), "frames_per_chunk": self._model.frames_per_chunk,
                "stamps_ns": stamps, "frame_id": snapshot.frame_id, "interval_s": self._interval_s,
                "timeout_s": params["imagine_timeout_s"], "sub_batch": params["imagine_sub_batch"] or None,
                "default_steps": int(getattr(getattr(self._model, "config", None), "denoise_steps", 1)),
                "live_chunk_s": None if live_chunk_s is None else live_chunk_s * self._model.frames_per_chunk}
