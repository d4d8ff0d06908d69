// The shop page: no inline script (the CSP forbids it). Talks only to the gateway's /api, sends the
// CSRF token on every state-changing call, and never sees a token of any kind.
const $ = (id) => document.getElementById(id);
let csrf = '';

async function api(path, options = {}) {
  // A Content-Type only with a body: the gateway refuses a JSON type with nothing to parse (POST /logout).
  const type = options.body === undefined ? {} : { 'content-type': 'application/json' };
  const response = await fetch(path, {
    credentials: 'same-origin',
    ...options,
    headers: { ...type, 'x-csrf-token': csrf, ...(options.headers ?? {}) },
  });
  const body = await response.json().catch(() => ({}));
  return { status: response.status, body };
}

function show(signedIn, sub) {
  $('who').textContent = signedIn ? `Signed in as ${sub}` : 'You are not signed in.';
  $('login').hidden = signedIn;
  $('logout').hidden = !signedIn;
  $('shop').hidden = !signedIn;
}

async function loadOrders() {
  const { status, body } = await api('/api/orders');
  const list = $('orders');
  list.replaceChildren();
  if (status !== 200) return;
  for (const order of body.orders) {
    const entry = document.createElement('li');
    entry.textContent = `${order.quantity} × ${order.item} — ${(order.amount / 100).toFixed(2)} (order ${order.orderId.slice(0, 8)})`;
    list.append(entry);
  }
}

async function start() {
  const session = await api('/api/session');
  if (session.status !== 200) return show(false);
  csrf = session.body.csrf;
  show(true, session.body.user.sub);
  const items = await api('/api/items');
  for (const item of items.body.items ?? []) {
    const option = document.createElement('option');
    option.value = item.item;
    option.textContent = `${item.name} — ${(item.price / 100).toFixed(2)}`;
    $('item').append(option);
  }
  await loadOrders();
}

$('order-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const result = $('order-result');
  const { status, body } = await api('/api/orders', {
    method: 'POST',
    body: JSON.stringify({ item: $('item').value, quantity: Number($('quantity').value) }),
  });
  result.className = status === 201 ? '' : 'error';
  result.textContent =
    status === 201
      ? `Order ${body.orderId.slice(0, 8)} placed and paid.`
      : `Not placed: ${body.message ?? body.error} (request ${body.requestId ?? '-'})`;
  await loadOrders();
});

$('logout').addEventListener('click', async () => {
  await api('/logout', { method: 'POST' });
  show(false);
});

start();
