/**
 * The source of a user transformation for the tests. It logs `<log> <event name>` and sets
 * `properties[<property>] = true`, except: `Boom` throws `<error>`, `Spin` loops forever,
 * `Noise` is dropped and `Split` fans out into itself and a `Split Copy`. With `fixed`,
 * `Boom` and `Spin` are enriched (with only that property) instead.
 */
export function shapeFunction(o: { log: string; error: string; property: string; fixed?: boolean }): string {
  const prop = JSON.stringify(o.property);
  const recovered = `return { ...e, properties: { [${prop}]: true } }`;
  return `
interface Ev { event?: string; properties?: Record<string, unknown>; messageId: string }
export default function (e: Ev) {
  console.log(${JSON.stringify(o.log)}, e.event);
  if (e.event === 'Boom') ${o.fixed ? recovered : `throw new Error(${JSON.stringify(o.error)})`};
  if (e.event === 'Spin') ${o.fixed ? recovered : 'for (;;) {}'}
  if (e.event === 'Noise') return null;
  if (e.event === 'Split') return [e, { ...e, event: 'Split Copy' }];
  return { ...e, properties: { ...e.properties, [${prop}]: true } };
}
`;
}
