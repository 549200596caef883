"""The predictor node's input side (a mixin of :class:`~astra_ros.ros.predictor_node.PredictorNode`):
subscription callbacks, stamp checks, pairing images with states, the observation window and its
history. Every received message is used or counted as skipped with a reason (the ledger)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.event_handler import QoSMessageLostInfo
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from astra_ros.data.images import ImageDecodeError
from astra_ros.ros.conversions import compressed_msg_to_rgb, image_msg_to_rgb, pose_msg_to_matrix, stamp_to_ns, twist_msg_to_vector
from astra_ros.ros.predictor_core import (
    model_intrinsics,
    state_kind,
)
from astra_ros.ros.sync import (
    DROP_IMAGE_BACKWARDS,
    DROP_IMAGE_QUEUE_FULL,
    DROP_NO_STATE_IN_SLOP,
    DROP_STATE_BACKWARDS,
)


from astra_ros.ros.predictor_params import LOG_THROTTLE_S, FLOAT32_MAX, CLOCK_MISMATCH_NS, LOST_CHANGE_MAX, QUATERNION_NORM_TOLERANCE, TRACK_S


class PredictorInputs:
    """Input callbacks of the predictor; the node's state lives on the node (``self``)."""

    # ------------------------------------------------------------------ inputs
    def _drop(self, reason: str, detail: str) -> None:
        """Count a refused input (its reason starts with its stream) and warn (throttled); the lock is held."""
        self._ledger.skip(reason)
        self._refusals.refuse(reason.split("_")[0], reason)
        self.get_logger().warning(f"dropped input ({reason}): {detail}", throttle_duration_sec=LOG_THROTTLE_S)

    def _arrived(self, stream: str) -> None:
        with self._lock:
            self._inputs.arrived(stream, time.monotonic())

    def _on_lost(self, stream: str, info: QoSMessageLostInfo) -> None:
        """The middleware lost messages of ``stream`` before a callback saw them (a burst beyond the queue)."""
        # Some middlewares fill the change with garbage (2**31 after a few hundred images): only a
        # plausible, non-negative change counts.
        change = int(info.total_count_change)
        if 0 <= change <= LOST_CHANGE_MAX:
            with self._lock:
                self._lost[stream] += change

    def _feeding_stream(self) -> str:
        """The input whose states are paired with the images: ``pose``, or the twist source."""
        return "pose" if state_kind(self._params["action_modality"]) == "pose" else self._params["twist_source"]

    def _feeds_model(self, stream: str) -> bool:
        return stream == self._feeding_stream()

    def _state_silent(self, now_s: float) -> bool:
        """The stream feeding the model has delivered no usable state for ``input_timeout_s``."""
        return now_s - self._last_accepted_s[self._feeding_stream()] > self._params["input_timeout_s"]

    def _fallback_state(self) -> np.ndarray:
        """What images are paired with while the feeding stream is silent: no motion.

        Twist/keys: a zero twist (a base whose command stream stopped is taken to stand still, as
        velocity controllers with a command timeout do). Camera/robot: the last pose received held
        (identity before any), so the window and its constant-velocity future show no motion.
        """
        if state_kind(self._params["action_modality"]) == "twist":
            return np.zeros(6)
        return np.eye(4) if self._last_pose is None else self._last_pose

    def _accept_stamp(self, stream: str, stamp_ns: int) -> bool:
        verdict = self._stamps[stream].accept(stamp_ns)
        if verdict in ("backwards", "duplicate"):
            how = "is before" if verdict == "backwards" else "repeats"
            self._drop(f"{stream}_stamp_{verdict}", f"{stream} stamp {stamp_ns} ns {how} the previous one")
            return False
        if verdict == "jump_undone":
            self._take_back_outlier(stream, stamp_ns)
        if verdict == "restart":
            self._restarts[stream] += 1
            if stream == "image" or self._feeds_model(stream):
                self.get_logger().warning(f"{stream} stamps restarted (clock jumped back, e.g. a bag loop): "
                                          "history cleared")
                self._restart_history(stream, stamp_ns)
        return True

    def _take_back_outlier(self, stream: str, stamp_ns: int) -> None:
        """The previous ``stream`` stamp jumped far ahead and ``stamp_ns`` continues from before it: that
        message was an outlier (a glitched stamp). Take it out of the queues and the window, so that it
        neither blocks the good stamps after it nor pairs with them (the lock is held)."""
        outlier_ns = self._stamps[stream].undone_ns
        self.get_logger().warning(f"{stream} stamp {outlier_ns} ns was {(outlier_ns - stamp_ns) / 1e9:.1f} s ahead of "
                                  f"the stream around it: taken back as a glitch", throttle_duration_sec=LOG_THROTTLE_S)
        if stream == "image":
            self._grid.undo_last()  # the grid must not wait for a time the outlier claimed
            queued = len(self._pairer.discard_images_after(stamp_ns))
            windowed = set(self._window.discard_after(stamp_ns))
            self._ledger.skip("image_stamp_jump", queued + len(self._unsent & windowed))
            self._unsent -= windowed
        elif self._feeds_model(stream):
            self._pairer.discard_states_after(stamp_ns)  # it was used (counted); it only leaves the queue
            # ... and the track the catch-up reads, which must stay in time order (it is searched).
            self._track = [(t, state) for t, state in self._track if t <= stamp_ns]

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """The camera's intrinsics, for a model that turns the newest frame by the commanded rotation
        (``rotation_reference``); without them it assumes its config's field of view."""
        # Compared as bytes: a NaN in K is unequal to itself, and each such message warned again.
        key = (msg.width, msg.height, np.asarray(msg.k, dtype=np.float64).tobytes())
        if key == self._intrinsics_key:
            return
        self._intrinsics_key = key
        try:
            K = model_intrinsics(msg.k, msg.width, msg.height, self._model.resolution, self._params["resize_mode"])
        except ValueError as error:
            self.get_logger().warning(f"camera_info ignored, the model keeps its {self._intrinsics_source} intrinsics: "
                                      f"{error}", throttle_duration_sec=LOG_THROTTLE_S)
            return
        for model in (self._model, self._imagine_model):
            set_intrinsics = getattr(model, "set_intrinsics", None)
            if set_intrinsics is not None:
                set_intrinsics(K)  # one attribute: each model thread reads it whole at its next chunk
        self._intrinsics_source = (f"camera_info (at the model's size: fx={K[0, 0]:.2f} fy={K[1, 1]:.2f} "
                                   f"cx={K[0, 2]:.2f} cy={K[1, 2]:.2f} px)")
        self._camera_info_size = (int(msg.width), int(msg.height))
        self._camera_info = self._predicted_camera_info(K)

    def _check_camera_info_size(self, width: int, height: int) -> None:
        """Warn when the applied camera_info describes another image size than the images' (a resize
        without its camera_info): K is scaled from the camera_info's own size, wrong if the aspect differs."""
        info_size = self._camera_info_size
        if info_size is not None and info_size != (width, height):
            self.get_logger().warning(
                f"camera_info is for {info_size[0]}x{info_size[1]} images but the images are {width}x{height}: its K "
                "is used as it is (scaled to the model); publish the camera_info of the images you send (image_proc "
                "resizes both)", throttle_duration_sec=LOG_THROTTLE_S)

    def _predicted_camera_info(self, K: np.ndarray) -> CameraInfo:
        """The camera_info published with each predicted image: its intrinsics at the model's resolution."""
        info = CameraInfo()
        info.width, info.height = int(self._model.resolution[1]), int(self._model.resolution[0])
        info.k = [float(v) for v in np.asarray(K, dtype=np.float64).reshape(-1)]
        info.p = [float(K[0, 0]), 0.0, float(K[0, 2]), 0.0, 0.0, float(K[1, 1]), float(K[1, 2]), 0.0, 0.0, 0.0, 1.0, 0.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        return info

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self._arrived("image")
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            rgb = compressed_msg_to_rgb(msg) if isinstance(msg, CompressedImage) else image_msg_to_rgb(msg)
        except ImageDecodeError as error:
            with self._lock:
                self._ledger.receive("image")
                self._drop("image_decode_error", str(error))
            return
        with self._lock:
            self._ledger.receive("image")
            if not self._accept_stamp("image", stamp_ns):
                return
            self._check_camera_info_size(rgb.shape[1], rgb.shape[0])
            if msg.header.frame_id != self._image_frame_id:
                if self._image_frame_id is not None and (len(self._window) or self._pairer.pending_images):
                    # Another camera (a driver switched, a remap changed): its frames are not the history's future.
                    self.get_logger().warning(f"image frame_id changed from '{self._image_frame_id}' to "
                                              f"'{msg.header.frame_id}': history restarted",
                                              throttle_duration_sec=LOG_THROTTLE_S)
                    self._restarts["image_frame_id"] += 1
                    self._restart_history("image", stamp_ns)
                self._image_frame_id = msg.header.frame_id
                if self._arm_camera is not None:
                    self._arm_camera.on_frames(camera_frame=msg.header.frame_id)
            if not self._grid.offer(stamp_ns):  # between two frames of the model's grid (a faster camera)
                self._ledger.skip("image_off_grid")
                return
            image = (rgb, msg.header.frame_id)
            if not self._state_silent(time.monotonic()):
                self._pair(lambda: self._pairer.add_image(stamp_ns, image))
                return
            # Fallback: the feeding stream is silent; pair this image (and any still waiting) with no motion.
            if not self._fallback_active:
                self._fallback_active = True
                # Info, not a warning: the silence itself is warned about once (diagnostics tick).
                self.get_logger().info(
                    f"no {self._feeding_stream()} for {self._params['input_timeout_s']} s: predicting with "
                    + ("a zero twist" if state_kind(self._params["action_modality"]) == "twist" else "the last pose held")
                    + " until it returns")
            state = self._fallback_state()
            for pending_ns, pending in self._pairer.take_pending_images() + [(stamp_ns, image)]:
                self._add_to_window(pending_ns, pending, state)
                self._fallback_frames += 1
                self._fallback_in_window = True

    def _on_state(self, stream: str, stamp_ns: int, state: np.ndarray) -> None:
        """A pose (4x4) or twist (6) of ``stream``: checked, remembered, paired when it feeds the model."""
        with self._lock:
            self._ledger.receive(stream)
            # The model runs in float32: a finite value beyond its range would become inf there.
            if not (np.isfinite(state).all() and np.abs(state).max() <= FLOAT32_MAX):
                self._drop(f"{stream}_not_finite", f"{stream} at {stamp_ns} ns has NaN, inf or out-of-range values")
                return
            if not self._accept_stamp(stream, stamp_ns):
                return
            if not self._feeds_model(stream):
                self._ledger.skip(f"{stream}_not_used_by_{self._params['action_modality']}_actions")
                return
            if self._fallback_active and state.shape == (4, 4) and self._fallback_in_window:
                # The frames of the silence hold a pose the camera has since left (identity if no pose came
                # yet): next to this one they would read as one large motion. Start again from real poses.
                self._restart_history(stream, stamp_ns)
                self.get_logger().info(f"{stream} is back after a silence: history restarted from real poses")
            if self._pair(lambda: self._pairer.add_state(stamp_ns, state), state_stream=stream)[DROP_STATE_BACKWARDS]:
                return  # refused by the pairer (counted)
            self._ledger.use(stream)
            self._last_accepted_s[stream] = time.monotonic()
            if self._fallback_active:
                self._fallback_active = False
                self.get_logger().info(f"{stream} is back: predictions use it again")
            if state.shape == (6,):
                self._latest_command, self._latest_command_ns = state, stamp_ns
            else:
                self._last_pose = state
            self._track.append((stamp_ns, state))
            while self._track and self._track[-1][0] - self._track[0][0] > TRACK_S * 1e9:
                self._track.pop(0)

    def _on_pose(self, msg: PoseStamped) -> None:
        self._arrived("pose")
        stamp_ns = stamp_to_ns(msg.header.stamp)
        o = msg.pose.orientation
        norm = float(np.linalg.norm([o.x, o.y, o.z, o.w])) if np.isfinite([o.x, o.y, o.z, o.w]).all() else np.nan
        if np.isfinite(norm) and abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
            with self._lock:  # (1e200, 1e200, 0, 0) used to become the identity, silently
                self._ledger.receive("pose")
                self._drop("pose_quaternion_not_unit", f"pose at {stamp_ns} ns has a quaternion of norm {norm:.6g}")
            return
        pose = pose_msg_to_matrix(msg.pose)
        if self._arm_camera is not None:
            self._arm_camera.on_frames(base_frame=msg.header.frame_id)
        if self._profile is not None and self._params["action_modality"] == "camera":
            pose = self._profile.conventions.camera_poses(pose[None])[0]  # what the topic gives -> optical frame
        self._on_state("pose", stamp_ns, pose)

    def _on_twist(self, msg: Twist | TwistStamped) -> None:
        self._arrived("twist")
        if isinstance(msg, TwistStamped):
            stamp_ns, twist = stamp_to_ns(msg.header.stamp), msg.twist
        else:  # no header: stamped on arrival
            stamp_ns, twist = self.get_clock().now().nanoseconds, msg
        self._on_state("twist", stamp_ns, self._to_model_axes(twist_msg_to_vector(twist)))

    def _on_odom(self, msg: Odometry) -> None:
        self._arrived("odom")
        self._on_state("odom", stamp_to_ns(msg.header.stamp), self._to_model_axes(twist_msg_to_vector(msg.twist.twist)))

    def _to_model_axes(self, twist: np.ndarray) -> np.ndarray:
        """A twist in the model's axis signs (REP-103): the profile's ``twist_signs`` undone."""
        return twist if self._profile is None else self._profile.conventions.twist(twist[None])[0]

    def _pair(self, call: Any, state_stream: str = "") -> Counter[str]:
        """Run a pairer call, count what it dropped in the ledger, add its pairs to the window; the drops by reason.

        A state call can drop images (decided without a state in the slop) and still accept its state.
        """
        before, stale_before = Counter(self._pairer.dropped), self._pairer.stale_pairs
        pairs = call()
        drops = self._pairer.dropped - before
        for reason, count in drops.items():
            self._ledger.skip({DROP_IMAGE_QUEUE_FULL: "image_queue_full",
                               DROP_NO_STATE_IN_SLOP: "image_no_state_within_slop",
                               DROP_IMAGE_BACKWARDS: "image_stamp_backwards",
                               DROP_STATE_BACKWARDS: f"{state_stream}_stamp_backwards"}.get(reason, reason), count)
        for pair in pairs:
            self._add_to_window(pair.image_stamp_ns, pair.image, pair.state)
        gap_ns = self._pairer.last_unpaired_gap_ns
        if drops[DROP_NO_STATE_IN_SLOP] and gap_ns is not None and abs(gap_ns) > CLOCK_MISMATCH_NS:
            self.get_logger().warning(self._clock_mismatch_hint(gap_ns), throttle_duration_sec=LOG_THROTTLE_S)
        # Held commands: an image far from every command while commands do arrive means another clock.
        if self._pairer.stale_pairs > stale_before and gap_ns is not None and abs(gap_ns) > CLOCK_MISMATCH_NS:
            self.get_logger().warning(self._clock_mismatch_hint(gap_ns, held=True), throttle_duration_sec=LOG_THROTTLE_S)
        return drops

    def _clock_mismatch_hint(self, gap_ns: int, held: bool = False) -> str:
        """Why images and states seconds apart cannot pair, and the usual fix."""
        stream = self._feeding_stream()
        if held:
            text = (f"images are stamped {gap_ns / 1e9:+.1f} s from the nearest {stream}: the two streams carry "
                    "different clocks, so the images are paired with a zero command")
        else:
            text = (f"images are stamped {gap_ns / 1e9:+.1f} s from the nearest {stream} (sync_slop_s "
                    f"{self._params['sync_slop_s']}): the two streams carry different clocks, so no image pairs")
        sim_time = bool(self.get_parameter("use_sim_time").value)
        if stream == "twist" and not self._params["twist_stamped"] and sim_time:
            return text + (". A plain geometry_msgs/Twist has no stamp and is stamped on arrival with this "
                           "node's clock, here /clock (use_sim_time is true): the images must carry /clock's "
                           "time as well (is /clock published? replaying a bag: play it with --clock), or "
                           "publish TwistStamped (twist_stamped:=true)")
        if stream == "twist" and not self._params["twist_stamped"]:
            return text + (". A plain geometry_msgs/Twist has no stamp and is stamped on arrival with this "
                           "node's clock: publish TwistStamped (twist_stamped:=true) or, replaying a bag, "
                           "play it with --clock and run this node with use_sim_time:=true")
        return text + ". Stamp both with one clock (replaying a bag: --clock and use_sim_time:=true)"

    def _add_to_window(self, stamp_ns: int, image: tuple[np.ndarray, str], state: np.ndarray) -> None:
        rgb, frame_id = image
        evicted = self._window.add(stamp_ns, rgb, state, frame_id)
        if evicted is not None:
            self._supersede({evicted.stamp_ns})
        self._unsent.add(int(stamp_ns))
        self._loop.notify()  # a newer frame: the next forecast may start now, not at the idle loop's next look

    def _supersede(self, stamps_ns: set[int]) -> None:
        """Frames that left the window before any prediction used them: skipped (the camera outran the model)."""
        superseded = self._unsent & stamps_ns
        self._ledger.skip("image_superseded", len(superseded))
        self._unsent -= superseded

    def _clear_history(self) -> None:
        """Forget the window, the queued inputs and the stamps (the lock is held); unused images are counted."""
        self._ledger.skip("image_history_cleared", len(self._unsent) + len(self._pairer.take_pending_images()))
        self._unsent.clear()
        self._window.clear()
        self._pairer = self._new_pairer()
        for guard in self._stamps.values():
            guard.reset()
        self._latest_command = None
        self._last_predicted_stamp_ns = None
        self._live.clear()  # a forecast in flight from the old history is not published
        self._live_snapshot = None  # ~/imagine must not continue the forgotten history
        self._track.clear()
        self._grid.reset()
        self._fallback_in_window = False

    def _restart_history(self, stream: str, stamp_ns: int) -> None:
        """Clear the history at a ``stream`` message that stays: its stamp opens the new stream (lock held)."""
        self._clear_history()
        self._stamps[stream].accept(stamp_ns)

