export { LineageRecorder, type LineageRecorderOptions } from './attempt-recorder.js';
export { type TraceDeps, type TracedDestination, type TraceReport, traceMessage } from './trace.js';
export { traceAdminRoutes } from './trace-routes.js';
