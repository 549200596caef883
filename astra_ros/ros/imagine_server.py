"""``~/imagine`` apart from the live loop: its own thread, its own executor, its own model stream.

An ``~/imagine`` request can keep the model busy for tens of seconds. Served from the predictor's
single-threaded executor, its wait blocked everything else the node does: live predictions stopped,
``get_parameters`` took seconds, and the input timeout then cleared the live history. So the
service lives on a hidden node (``_<node>_imagine``, same process and context) spun by an executor in
a thread of its own, under the predictor's resolved name ``~/imagine``; the model work runs on a
:class:`~astra_ros.ros.predictor_core.ModelWorker` over a twin of the live model (same weights, its
own stream), so the live forecasts go on beside it.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from typing import Any, Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor

from astra_ros.model.world_model import ImagineCancelled
from astra_ros.ros.conversions import rgb_to_image_msg
from astra_ros.ros.predictor_core import ImagineSampling, ModelWorker, check_imagine_request, imagine_job

AWAIT_SLICE_S = 0.2  # [s] how often a request waiting for the model checks that the node still runs


class ImagineCost:
    """Seconds per candidate and chunk that ``~/imagine`` has taken (None before the first call)."""

    def __init__(self) -> None:
        self.per_candidate_chunk_s: float | None = None

    def add(self, seconds: float, candidates: int, chunks: float) -> None:
        sample = seconds / max(1, candidates * chunks)
        previous = self.per_candidate_chunk_s
        self.per_candidate_chunk_s = sample if previous is None else 0.5 * previous + 0.5 * sample

    def estimate_s(self, candidates: int, chunks: float, live_chunk_s: float | None) -> float | None:
        """Expected seconds for a request; from the live forecasts' chunk cost (a batch of one, so an
        upper bound per candidate) until a request has been measured; None when nothing is known."""
        per = self.per_candidate_chunk_s
        if per is None:
            if live_chunk_s is None:
                return None
            per = 0.5 * live_chunk_s  # batched candidates share the passes' fixed costs
        return per * candidates * chunks


class ImagineServer:
    """Serves ``~/imagine`` for a predictor node (see the module docstring).

    ``prepare(request)`` (the predictor's, under its lock) checks the request and returns the job's
    inputs or raises ValueError with the reason; everything else is here.
    """

    def __init__(self, node: Any, srv_type: Any, model: Any, prepare: Callable[[Any], dict],
                 record: Callable[[str], None], num_threads: int) -> None:
        self._owner = node
        self._prepare = prepare
        self._record = record
        self._started: dict = {}  # what the imagine model's stream holds (see imagine_job)
        self.cost = ImagineCost()  # full requests
        self.draft_cost = ImagineCost()  # draft requests: several times cheaper, so kept apart
        self.worker = ModelWorker(model, queue_size=1, num_threads=num_threads)
        self.service_name = node.resolve_service_name("~/imagine")
        # No global arguments: a `-r __node:=...` meant for the predictor must not rename this node too.
        self._node = rclpy.create_node(f"_{node.get_name()}_imagine", context=node.context,
                                       namespace=node.get_namespace(), start_parameter_services=False,
                                       use_global_arguments=False)
        self._node.create_service(srv_type, self.service_name, self._on_imagine)
        self._executor = SingleThreadedExecutor(context=node.context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, name="astra-imagine-executor", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while True:
            try:
                self._executor.spin()
                return
            except Exception as error:
                if not self._owner.context.ok():  # the context shut down under it: the process is stopping
                    return
                # Anything else escaping a callback would end this thread and ~/imagine with it, silently.
                self._owner.get_logger().error(f"~/imagine: {type(error).__name__}: {error} (still serving)")

    def _on_imagine(self, request: Any, response: Any) -> Any:
        response.success = False
        response.batch, response.horizon = int(request.batch), int(request.horizon)
        try:
            job = self._prepare(request)
            actions = check_imagine_request(
                job["model_actions"], batch=request.batch, horizon=request.horizon, action_dim=job["model_dim"],
                expected_dim=job["model_dim"], limits=job["limits"], denoise_steps=int(request.denoise_steps),
                guidance_scale=float(request.guidance_scale))
            chunks = -(-(len(job["catch_up"]) + actions.shape[1]) // job["frames_per_chunk"])
            steps = int(request.denoise_steps) or job["default_steps"]
            cost = self.draft_cost if request.draft and self.draft_cost.per_candidate_chunk_s is not None else self.cost
            estimate = cost.estimate_s(actions.shape[0], chunks * steps / job["default_steps"], job["live_chunk_s"])
            if estimate is not None and estimate > job["timeout_s"]:
                raise ValueError(f"this request would take about {estimate:.1f} s ({actions.shape[0]} candidates x "
                                 f"{chunks} chunks, {len(job['catch_up'])} frames of them catching up to now), "
                                 f"more than imagine_timeout_s={job['timeout_s']:g} s: ask for fewer candidates or "
                                 "frames, or raise imagine_timeout_s")
        except ValueError as error:
            self._record("refused")
            response.message = str(error)
            return response
        except Exception as error:  # a defect, not the request: the caller still gets an answer
            self._record("failed")
            response.message = f"imagination failed: {type(error).__name__}: {error}"
            self._owner.get_logger().error(f"~/imagine: preparing the request failed: {response.message}")
            return response
        seed = secrets.randbelow(2**31) if request.seed < 0 else int(request.seed)
        sampling = ImagineSampling(steps=int(request.denoise_steps) or None,
                                   guidance_scale=float(request.guidance_scale) or None,
                                   shared_noise=bool(request.shared_noise), last_frame_only=bool(request.last_frame_only),
                                   max_batch=job["sub_batch"], draft=bool(request.draft))
        began = time.perf_counter()
        deadline = time.monotonic() + job["timeout_s"]
        cancel = threading.Event()
        stopping = self.worker.stopping
        future = None
        try:
            future = self.worker.submit(partial(
                imagine_job, snapshot=job["snapshot"], catch_up=job["catch_up"], actions=actions,
                modality=job["modality"], seed=seed, sampling=sampling, started=self._started,
                should_stop=lambda: cancel.is_set() or stopping.is_set()), job["timeout_s"])
            frames = self._await(future, deadline)
        except Exception as error:  # busy past the timeout, or the model failed: tell the caller
            cancel.set()
            if future is not None:
                future.cancel()
            self._started.clear()  # a cancelled start may have left the stream half built
            self._record("failed")
            if isinstance(error, (TimeoutError, queue.Full)):
                response.message = (f"imagination failed: no answer within imagine_timeout_s={job['timeout_s']:g} s "
                                    "(the request was cancelled)")
            else:
                response.message = f"imagination failed: {str(error) or type(error).__name__}"
            return response
        seconds = time.perf_counter() - began
        (self.draft_cost if request.draft else self.cost).add(seconds, actions.shape[0],
                                                              chunks * steps / job["default_steps"])
        stamps = job["stamps_ns"][-frames.shape[1]:]
        response.frames = [rgb_to_image_msg(frame, int(stamps[t]), job["frame_id"])
                           for candidate in frames for t, frame in enumerate(candidate)]
        response.frames_per_candidate = int(frames.shape[1])
        response.frame_interval_s = float(job["interval_s"])
        response.latency_s = float(seconds)
        response.catch_up_frames = int(len(job["catch_up"]))
        response.success = True
        response.message = (f"{len(frames)} futures of {frames.shape[1]} frames from {job['modality']} actions, "
                            f"after {len(job['catch_up'])} frames caught up to now")
        self._record("served")
        return response

    def _await(self, future: Future, deadline: float) -> Any:
        """``future.result()`` by ``deadline`` (monotonic [s]), in short slices so a shutdown is noticed."""
        while True:
            remaining = deadline - time.monotonic()
            try:
                return future.result(timeout=max(0.0, min(AWAIT_SLICE_S, remaining)))
            except FutureTimeout:
                if remaining <= AWAIT_SLICE_S:
                    raise TimeoutError("deadline passed") from None
                if not self._owner.context.ok():
                    raise ImagineCancelled("the node is shutting down") from None

    def stop(self) -> bool:
        """Stop the worker (a running request stops at its next chunk) and the executor."""
        stopped = self.worker.stop()
        self._executor.shutdown(timeout_sec=1.0)
        self._thread.join(2.0)
        try:
            self._node.destroy_node()
        except Exception:  # already gone with the context
            pass
        return stopped

