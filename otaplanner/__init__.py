"""ota-planner: releases, signed OTA jobs and staged rollouts that halt themselves (PROTOCOL §3).

Modules: `rollout` (the pure rules: config, buckets, gates, command table), `rollout_store` and
`rollout_scripts` (state in Redis, one Lua script per decision), `records` (a rollout as loaded,
job ids), `control` (the per-tick driver: lease, gates, transitions) and the parts it drives:
`issuing` (taking devices in, sending and withdrawing jobs), `reporting` (status and events),
`health_gate`, `refresh`; `commands` (operator requests), `rollback`, `planner` (the daemon's
handler), `aws_jobs` (the AWS IoT Jobs device API over the planner's jobs, docs/AWS.md), `jobs`,
`manifest`, `signing`, `artifacts`, `artifact_http` (the local store's HTTP server). The device
side lives in `daemons.sim.device_model`.

Where PROTOCOL §3 is silent, as AWS IoT Jobs, and written down here:
- A job id is `<rollout id>@<device id>` (`#rb` appended for a rollback job); `@` is in neither id.
- The job timeout (`timeout_s`) runs from the device's first in-progress report, as AWS's
  in-progress timeout: a device that is offline keeps its job (retained) and does not time out.
  Such a job is re-signed (same job id) before its manifest expires (`job_expiry_s`, default 1 day).
- Device states: pending (waiting for `rate_per_min`), issued (AWS QUEUED), in_progress,
  succeeded, failed, rolled_back, rejected, timed_out, withdrawn (AWS CANCELED). `rejected` counts
  as a failure for the gate, like failed, rolled_back and timed_out.
- A stage's success share is succeeded / every device taken in so far (all open stages). An empty
  stage passes once soaked. When every device of the stage is decided and the share is below
  `success_pct`, the stage can never pass: the rollout halts (success gate) instead of waiting.
- The health gate (extension fields `health_margin`, default 15 points, and `health_min_devices`,
  default 3): per hw cohort, the median healthwatch score of devices this rollout updated (health
  received after their success) against the median of the cohort's devices not on the new
  version; halt when it is lower by more than the margin.
- A release's `hw` list filters the fleet too: a device whose hw is not in it (or not known yet) is
  not part of the rollout. A device already on the target version counts as succeeded, no job.
- A device holds one job at a time (the retained job topic is one slot): a device still busy with
  another rollout's job waits. A finished job's retained message is cleared (empty retained).
- Commands: pause (running), resume (paused), abort (running/paused/halted), advance
  (running/paused, opens the next stage now), rollback (halted/aborted). Anything else is 409.
  Halted is final apart from abort and rollback, as an AWS job aborted by its abort criteria.
- `rollback` issues jobs for the release each updated device ran before; a release whose
  secure_version is below the bad one's is refused (409) and one not registered is 404; when some
  devices can roll back and others cannot, the command is accepted and lists the refusals.
- Events carry `seq` (the rollout's revision) and are sent at least once: a replica that takes a
  rollout over (restart, failover) sends again those not yet marked as published.
- Two replicas: a per-rollout lease in Redis picks the one that runs the periodic work; the
  per-device issue script (pending -> issued, once) is what guarantees no job goes out twice.
"""
