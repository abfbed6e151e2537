import type { MappingRule } from './spec.js';

/**
 * The built-in rules (`preset: stripe | github`), written in the same rule language users
 * write, so a preset can be copied into `rules:` and changed.
 */

const money = (path: string) => ({ path: `data.object.${path}`, currency: 'data.object.currency' });

/** The customer: its id on the object, or the object itself for customer events. */
const STRIPE_CUSTOMER = 'data.object.customer';
/** An application's own user id, where the integration put one in the metadata. */
const STRIPE_USER_ID = ['data.object.metadata.user_id', 'data.object.metadata.userId'];

const stripeTrack = (when: string | string[], properties: MappingRule['properties'], email: string[]) =>
  ({
    when: { type: when },
    type: 'track',
    event: '{type}',
    userId: STRIPE_USER_ID,
    anonymousId: [STRIPE_CUSTOMER, ...email],
    ...(email.length > 0 ? { email } : {}),
    externalIds: { stripe_customer_id: STRIPE_CUSTOMER },
    timestamp: 'created',
    properties: { stripe_event_id: 'id', livemode: 'livemode', ...properties },
  }) satisfies MappingRule;

/**
 * Stripe: customers become identify calls (email, name, phone; `stripe_customer_id` as an
 * external id and a trait); charges, invoices, subscriptions, payment intents and checkout
 * sessions become track calls named after the Stripe event type (`charge.succeeded`), with
 * amounts in currency units (`1999` USD is `19.99`, `1999` JPY is `1999`). The anonymousId is
 * the Stripe customer id (or, for a guest payment, its email); `metadata.user_id` is the userId.
 */
export const STRIPE_RULES: MappingRule[] = [
  {
    when: { type: ['customer.created', 'customer.updated'] },
    type: 'identify',
    userId: STRIPE_USER_ID,
    anonymousId: 'data.object.id',
    email: 'data.object.email',
    externalIds: { stripe_customer_id: 'data.object.id' },
    timestamp: 'created',
    traits: {
      name: 'data.object.name',
      phone: 'data.object.phone',
      description: 'data.object.description',
      stripe_customer_id: 'data.object.id',
      address: 'data.object.address',
    },
  },
  {
    when: { type: 'customer.deleted' },
    type: 'track',
    event: '{type}',
    userId: STRIPE_USER_ID,
    anonymousId: 'data.object.id',
    email: 'data.object.email',
    externalIds: { stripe_customer_id: 'data.object.id' },
    timestamp: 'created',
    properties: { stripe_event_id: 'id', livemode: 'livemode' },
  },
  stripeTrack(
    'charge.*',
    {
      charge_id: 'data.object.id',
      amount: money('amount'),
      amount_captured: money('amount_captured'),
      amount_refunded: money('amount_refunded'),
      currency: 'data.object.currency',
      status: 'data.object.status',
      paid: 'data.object.paid',
      refunded: 'data.object.refunded',
      payment_intent: 'data.object.payment_intent',
      invoice: 'data.object.invoice',
      description: 'data.object.description',
      failure_code: 'data.object.failure_code',
    },
    ['data.object.billing_details.email', 'data.object.receipt_email'],
  ),
  stripeTrack(
    'invoice.*',
    {
      invoice_id: 'data.object.id',
      number: 'data.object.number',
      status: 'data.object.status',
      currency: 'data.object.currency',
      total: money('total'),
      subtotal: money('subtotal'),
      amount_due: money('amount_due'),
      amount_paid: money('amount_paid'),
      amount_remaining: money('amount_remaining'),
      subscription: ['data.object.subscription', 'data.object.parent.subscription_details.subscription'],
      billing_reason: 'data.object.billing_reason',
    },
    ['data.object.customer_email'],
  ),
  stripeTrack(
    'customer.subscription.*',
    {
      subscription_id: 'data.object.id',
      status: 'data.object.status',
      currency: 'data.object.currency',
      price_id: 'data.object.items.data[0].price.id',
      product_id: 'data.object.items.data[0].price.product',
      amount: { path: 'data.object.items.data[0].price.unit_amount', currency: 'data.object.currency' },
      interval: 'data.object.items.data[0].price.recurring.interval',
      quantity: ['data.object.items.data[0].quantity', 'data.object.quantity'],
      cancel_at_period_end: 'data.object.cancel_at_period_end',
      trial_end: 'data.object.trial_end',
    },
    [],
  ),
  stripeTrack(
    'payment_intent.*',
    {
      payment_intent_id: 'data.object.id',
      amount: money('amount'),
      amount_received: money('amount_received'),
      currency: 'data.object.currency',
      status: 'data.object.status',
      description: 'data.object.description',
    },
    ['data.object.receipt_email'],
  ),
  stripeTrack(
    'checkout.session.*',
    {
      checkout_session_id: 'data.object.id',
      amount_total: money('amount_total'),
      amount_subtotal: money('amount_subtotal'),
      currency: 'data.object.currency',
      mode: 'data.object.mode',
      payment_status: 'data.object.payment_status',
      status: 'data.object.status',
    },
    ['data.object.customer_details.email', 'data.object.customer_email'],
  ),
];

const GITHUB_EVENT = '@x-github-event';
const githubBase = {
  type: 'track',
  event: '{@x-github-event} {action}',
  anonymousId: 'sender.login',
  externalIds: { github_login: 'sender.login', github_user_id: 'sender.id' },
} as const;
const repo = { repository: 'repository.full_name', action: 'action' };

/**
 * GitHub: every event becomes a track call named `<X-GitHub-Event> <action>` (`push`,
 * `issues opened`, `pull_request closed`), whose anonymousId is the sender's login, with
 * `github_login` and `github_user_id` external ids and the repository; push, issues,
 * pull_request, issue_comment, release and star add their own properties. `ping` (sent when
 * the hook is created) is acknowledged and not stored.
 */
export const GITHUB_RULES: MappingRule[] = [
  { when: { [GITHUB_EVENT]: 'ping' }, ignore: true, type: 'track' },
  {
    ...githubBase,
    when: { [GITHUB_EVENT]: 'push' },
    email: ['pusher.email', 'head_commit.author.email'],
    properties: {
      ...repo,
      ref: 'ref',
      before: 'before',
      after: 'after',
      created: 'created',
      deleted: 'deleted',
      forced: 'forced',
      compare: 'compare',
      head_commit_id: 'head_commit.id',
      head_commit_message: 'head_commit.message',
    },
    timestamp: 'head_commit.timestamp',
  },
  {
    ...githubBase,
    when: { [GITHUB_EVENT]: 'issues' },
    properties: {
      ...repo,
      number: 'issue.number',
      title: 'issue.title',
      state: 'issue.state',
      url: 'issue.html_url',
      author: 'issue.user.login',
    },
    timestamp: 'issue.updated_at',
  },
  {
    ...githubBase,
    when: { [GITHUB_EVENT]: 'pull_request' },
    properties: {
      ...repo,
      number: 'pull_request.number',
      title: 'pull_request.title',
      state: 'pull_request.state',
      merged: 'pull_request.merged',
      draft: 'pull_request.draft',
      base_ref: 'pull_request.base.ref',
      head_ref: 'pull_request.head.ref',
      additions: 'pull_request.additions',
      deletions: 'pull_request.deletions',
      changed_files: 'pull_request.changed_files',
      url: 'pull_request.html_url',
      author: 'pull_request.user.login',
    },
    timestamp: 'pull_request.updated_at',
  },
  {
    ...githubBase,
    when: { [GITHUB_EVENT]: 'issue_comment' },
    properties: {
      ...repo,
      number: 'issue.number',
      comment_id: 'comment.id',
      url: 'comment.html_url',
    },
    timestamp: 'comment.updated_at',
  },
  {
    ...githubBase,
    when: { [GITHUB_EVENT]: 'release' },
    properties: {
      ...repo,
      tag_name: 'release.tag_name',
      name: 'release.name',
      prerelease: 'release.prerelease',
      url: 'release.html_url',
    },
  },
  {
    ...githubBase,
    when: { [GITHUB_EVENT]: 'star' },
    properties: { ...repo, stargazers_count: 'repository.stargazers_count' },
    timestamp: 'starred_at',
  },
  { ...githubBase, properties: repo },
];

export const PRESETS: Readonly<Record<'stripe' | 'github', readonly MappingRule[]>> = {
  stripe: STRIPE_RULES,
  github: GITHUB_RULES,
};
