export { NatsEventLog, type NatsEventLogOptions, partitionFor } from './nats-event-log.js';
