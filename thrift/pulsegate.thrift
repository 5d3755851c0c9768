// pulsegate's public API: binary protocol over TCP (buffered transport by default, framed as an
// option, TLS optional). Status and instance-action ids are Aurora's and wire-stable. Fields
// marked optional may be left out; new fields are only ever added as optional.

namespace py pulsegate
namespace java org.pulsegate.api

enum JobUpdateStatus {
  ROLLING_FORWARD = 0,
  ROLLING_BACK = 1,
  ROLL_FORWARD_PAUSED = 2,
  ROLL_BACK_PAUSED = 3,
  ROLLED_FORWARD = 4,
  ROLLED_BACK = 5,
  ABORTED = 6,
  ERROR = 7,
  FAILED = 8,
  ROLL_FORWARD_AWAITING_PULSE = 9,
  ROLL_BACK_AWAITING_PULSE = 10
}

enum JobUpdateAction {
  INSTANCE_UPDATED = 1,
  INSTANCE_ROLLED_BACK = 2,
  INSTANCE_UPDATING = 3,
  INSTANCE_ROLLING_BACK = 4,
  INSTANCE_UPDATE_FAILED = 5,
  INSTANCE_ROLLBACK_FAILED = 6
}

// What a heartbeat answers: keep going (OK), the update is paused (PAUSED: keep heartbeating, a
// resume proceeds at once), the update is over (FINISHED: stop heartbeating).
enum HeartbeatStatus {
  OK = 1,
  FINISHED = 2,
  PAUSED = 3
}

enum StrategyKind {
  QUEUE = 1,
  BATCH = 2,
  VARIABLE_BATCH = 3
}

enum HeartbeatResume {
  AUTO = 1,
  OPERATOR = 2
}

// What the leader does once an update has awaited pulse for maxBlockedMs (DESIGN rule 14).
enum OnBlocked {
  PAUSE = 1,
  ABORT = 2,
  ROLL_BACK = 3
}

enum HealthCheckKind {
  HTTP = 1,
  TCP = 2,
  COMMAND = 3
}

enum InstanceState {
  ABSENT = 0,
  STARTING = 1,
  RUNNING = 2,
  HEALTHY = 3,
  EXITED = 4,
  KILLING = 5
}

// A bearer token; leave it out when auth is off. A health monitor also gives its name, so that
// what it does (a pause) is recorded as the monitor's, not an operator's.
struct Credentials {
  1: optional string token,
  2: optional string monitor
}

struct JobKey {
  1: string role,
  2: string environment,
  3: string name
}

struct JobUpdateKey {
  1: JobKey job,
  2: string id
}

// Instance ids first..last, both included.
struct Range {
  1: i32 first,
  2: i32 last
}

struct HealthCheck {
  1: HealthCheckKind kind,
  2: optional string path,            // HTTP: default "/health"
  3: optional list<string> command,   // COMMAND
  4: optional i32 intervalMs,
  5: optional i32 timeoutMs,
  6: optional i32 initialDelayMs,
  7: optional i32 healthyThreshold,
  8: optional i32 unhealthyThreshold
}

struct TaskConfig {
  1: list<string> command,            // argv, or with shell=true one string for /bin/sh -c
  2: optional bool shell,
  3: optional map<string, string> environment,
  4: optional string workingDir,
  5: optional HealthCheck healthCheck,
  6: optional map<string, string> labels,
  7: optional i32 stopGraceMs
}

struct ConfigGroup {
  1: TaskConfig config,
  2: list<Range> instances
}

struct UpdateStrategy {
  1: StrategyKind kind,
  2: list<i32> sizes                  // QUEUE and BATCH: one size; VARIABLE_BATCH: the last repeats
}

// Every field is optional: left out, it takes DESIGN §4's default.
struct JobUpdateSettings {
  1: optional UpdateStrategy strategy,
  2: optional bool autoPauseAfterBatch,
  3: optional i32 maxPerInstanceFailures,
  4: optional i32 maxFailedInstances,
  5: optional i32 minWaitInInstanceRunningMs,
  6: optional bool rollbackOnFailure,
  7: optional list<Range> updateOnlyTheseInstances,
  8: optional i32 heartbeatTimeoutMs,
  9: optional HeartbeatResume heartbeatResume,
  10: optional i32 heartbeatQuorum,           // distinct fresh monitors needed (rule 12), >= 1
  11: optional list<string> heartbeatMonitors, // names that count; empty or absent: any
  12: optional bool heartbeatAckBatches,      // batch b+1 waits for an ack of batch b (rule 13)
  13: optional i32 maxBlockedMs,              // act after awaiting pulse this long; 0: never
  14: optional OnBlocked onBlocked             // default PAUSE
}

struct Metadata {
  1: string key,
  2: string value
}

struct JobUpdateRequest {
  1: JobKey job,
  2: TaskConfig taskConfig,
  3: i32 instanceCount,
  4: optional JobUpdateSettings settings,
  5: optional list<Metadata> metadata
}

// createJob takes taskConfig and instanceCount; getJob returns groups (and taskConfig too when
// every instance has the same config).
struct JobConfiguration {
  1: JobKey key,
  2: optional TaskConfig taskConfig,
  3: i32 instanceCount,
  4: optional list<ConfigGroup> groups
}

struct JobUpdateEvent {
  1: JobUpdateStatus status,
  2: i64 timestampMs,
  3: string user,
  4: string message,
  5: optional string cause            // start, operator, heartbeat, heartbeat_timeout, auto_pause, ack_wait, blocked, failure, complete, error
}

struct JobInstanceUpdateEvent {
  1: i32 instanceId,
  2: i64 timestampMs,
  3: JobUpdateAction action,
  4: string message
}

struct JobUpdateSummary {
  1: JobUpdateKey key,
  2: string user,
  3: JobUpdateStatus status,
  4: i64 createdTimestampMs,
  5: i64 lastModifiedTimestampMs,
  6: list<Metadata> metadata
}

struct JobUpdateInstructions {
  1: list<ConfigGroup> initialState,  // the current configs of the instances it changes or removes
  2: optional ConfigGroup desiredState,  // the requested config; no instances if it only removes
  3: JobUpdateSettings settings,
  4: i32 instanceCount
}

struct UpdateProgress {
  1: i32 total,                       // instances the current direction has to handle
  2: i32 done,
  3: i32 inFlight,
  4: i32 failed,
  5: bool rollingBack
}

// What a heartbeat may say besides "still fine" (DESIGN rules 11, 13).
struct HeartbeatDetails {
  1: optional string monitor,         // this monitor's name; default: the principal, or "anonymous"
  2: optional i32 ackBatch            // "I verified batch ackBatch" (numbered from 1)
}

// One monitor's last heartbeat as the leader sees it.
struct MonitorPulse {
  1: string name,
  2: i64 ageMs,
  3: i64 leaseEndMs,
  4: bool fresh,
  5: optional i32 ackedBatch
}

// A coordinated active update's gate (DESIGN rule 15): open means it may act now.
struct GateState {
  1: bool open,
  2: optional string reason,          // no_heartbeat, timed_out, quorum, held_for_operator, awaiting_ack, paused
  3: string why,                      // for people, e.g. "quorum 1 of 2"
  4: i64 sinceMs,
  5: optional i64 leaseEndMs,
  6: i32 quorum,
  7: i32 freshMonitors,
  8: list<MonitorPulse> monitors,
  9: optional i32 batch,              // the batch to verify, numbered from 1
  10: optional list<i32> batchInstances,
  11: optional i32 awaitingAck,       // the batch whose ack the next batch waits for
  12: optional OnBlocked onBlocked,
  13: optional i64 onBlockedAtMs      // when onBlocked fires, if the update is blocked
}

struct JobUpdateDetails {
  1: JobUpdateSummary summary,
  2: JobUpdateInstructions instructions,
  3: list<JobUpdateEvent> updateEvents,
  4: list<JobInstanceUpdateEvent> instanceEvents,
  5: optional i64 heartbeatAgeMs,     // coordinated and active: age of the last heartbeat the leader has seen
  6: optional UpdateProgress progress,
  7: optional i32 heartbeatTimeoutMs,
  8: optional GateState gate          // coordinated and active, answered by the leader
}

struct JobUpdateQuery {
  1: optional string role,
  2: optional JobKey jobKey,
  3: optional JobUpdateKey key,
  4: optional string user,
  5: optional set<JobUpdateStatus> updateStatuses,
  6: optional i32 offset,
  7: optional i32 limit               // 0 or absent: all
}

struct JobUpdateDiff {
  1: list<ConfigGroup> add,
  2: list<ConfigGroup> remove,        // with the configs they have now
  3: list<ConfigGroup> update,        // with the configs they have now
  4: list<ConfigGroup> unchanged
}

struct InstanceStatus {
  1: i32 instanceId,
  2: InstanceState state,
  3: bool atDesiredConfig,            // runs the config the job wants for it
  4: optional i64 healthySinceMs,
  5: i32 failures,
  6: string message
}

struct SchedulerInfo {
  1: string id,
  2: string version,
  3: string role,                     // leader, follower, suspended
  4: optional string leaderId,
  5: optional string leaderAddress,   // host:port of the leader's API
  6: bool serving,
  7: optional string httpAddress,     // host:port of this node's HTTP port (metrics, web UI)
  8: optional string leaderHttpAddress,
  9: optional string instanceLogDir   // local driver: where instance logs are, <dir>/<role>/<env>/<name>/<id>.log
}

// batch, batchInstances and gate are filled in when the heartbeat carried HeartbeatDetails
// (even an empty one) and the leader runs the update; older clients get the first two fields.
struct HeartbeatResult {
  1: HeartbeatStatus status,
  2: JobUpdateStatus updateStatus,
  3: optional i32 batch,
  4: optional list<i32> batchInstances,
  5: optional GateState gate
}

exception InvalidRequest {
  1: string message,
  2: string field                     // the offending field, e.g. "settings.strategy.sizes[0]"
}

exception NotFound {
  1: string message
}

exception UpdateConflict {
  1: string message,
  2: JobUpdateKey activeKey
}

exception JobUpdating {
  1: string message,
  2: JobUpdateKey activeKey
}

exception AuthError {
  1: string message
}

// No leader, or storage unreachable: retry later (with backoff).
exception Unavailable {
  1: string message,
  2: optional string leaderAddress
}

// Reads take an optional trailing Credentials, needed only with auth.reads_require_auth.
service PulsegateScheduler {
  JobUpdateKey startJobUpdate(1: JobUpdateRequest request, 2: string message, 3: Credentials auth)
    throws (1: InvalidRequest invalid, 2: UpdateConflict conflict, 3: AuthError denied, 4: Unavailable unavailable)
  void pauseJobUpdate(1: JobUpdateKey key, 2: string message, 3: Credentials auth)
    throws (1: InvalidRequest invalid, 2: NotFound notFound, 3: AuthError denied, 4: Unavailable unavailable)
  void resumeJobUpdate(1: JobUpdateKey key, 2: string message, 3: Credentials auth)
    throws (1: InvalidRequest invalid, 2: NotFound notFound, 3: AuthError denied, 4: Unavailable unavailable)
  void abortJobUpdate(1: JobUpdateKey key, 2: string message, 3: Credentials auth)
    throws (1: InvalidRequest invalid, 2: NotFound notFound, 3: AuthError denied, 4: Unavailable unavailable)
  void rollbackJobUpdate(1: JobUpdateKey key, 2: string message, 3: Credentials auth)
    throws (1: InvalidRequest invalid, 2: NotFound notFound, 3: AuthError denied, 4: Unavailable unavailable)
  HeartbeatResult heartbeatJobUpdate(1: JobUpdateKey key, 2: Credentials auth, 3: HeartbeatDetails details)
    throws (1: InvalidRequest invalid, 2: NotFound notFound, 3: AuthError denied, 4: Unavailable unavailable)
  list<JobUpdateSummary> getJobUpdateSummaries(1: JobUpdateQuery query, 2: Credentials auth)
    throws (1: InvalidRequest invalid, 3: AuthError denied, 4: Unavailable unavailable)
  JobUpdateDetails getJobUpdateDetails(1: JobUpdateKey key, 2: Credentials auth)
    throws (1: InvalidRequest invalid, 2: NotFound notFound, 3: AuthError denied, 4: Unavailable unavailable)
  JobUpdateDiff getJobUpdateDiff(1: JobUpdateRequest request, 2: Credentials auth)
    throws (1: InvalidRequest invalid, 3: AuthError denied, 4: Unavailable unavailable)
  void createJob(1: JobConfiguration config, 2: Credentials auth)
    throws (1: InvalidRequest invalid, 2: JobUpdating updating, 3: AuthError denied, 4: Unavailable unavailable)
  JobConfiguration getJob(1: JobKey key, 2: Credentials auth)
    throws (1: InvalidRequest invalid, 2: NotFound notFound, 3: AuthError denied, 4: Unavailable unavailable)
  list<JobKey> listJobs(1: string role, 2: Credentials auth)
    throws (1: InvalidRequest invalid, 3: AuthError denied, 4: Unavailable unavailable)
  list<InstanceStatus> getInstances(1: JobKey key, 2: Credentials auth)
    throws (1: InvalidRequest invalid, 2: NotFound notFound, 3: AuthError denied, 4: Unavailable unavailable)
  void killJob(1: JobKey key, 2: string message, 3: Credentials auth)
    throws (1: InvalidRequest invalid, 2: NotFound notFound, 3: JobUpdating updating, 4: AuthError denied, 5: Unavailable unavailable)
  SchedulerInfo getSchedulerInfo()

  // An empty call: for liveness checks and as the baseline of the heartbeat benchmark.
  void ping()
}
