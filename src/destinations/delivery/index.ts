export { type BreakerState, backoffMs, CircuitBreaker, RateLimit } from './breaker.js';
export type { DeliveryProgress } from './delivery-metrics.js';
export {
  type DeliveryStore,
  deliveryQueue,
  type RunningStreamDestination,
  type StreamRunnerOptions,
  startStreamDestinations,
} from './delivery-runner.js';
export { EventGate, type GateOutcome } from './event-gate.js';
