/**
 * The identity provider's pages, rendered on the server: sign-in, sign-out and errors. No script at
 * all, no assets from elsewhere; one inline stylesheet allowed by its hash in the CSP. Accessible:
 * a language, landmarks, a label for every field, the error announced (role=alert) and tied to the
 * fields (aria-describedby, aria-invalid), autocomplete hints for password managers.
 */
import { createHash } from 'node:crypto';

const STYLE = `body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1b1d21}
main{max-width:22rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.2)}
h1{font-size:1.4rem;margin:0 0 1rem}label{display:block;font-weight:600;margin-top:1rem}
input{box-sizing:border-box;width:100%;padding:.6rem;margin-top:.25rem;font:inherit;border:1px solid #6b7280;border-radius:4px}
input:focus,button:focus{outline:3px solid #2563eb;outline-offset:2px}
button{margin-top:1.5rem;width:100%;padding:.7rem;font:inherit;font-weight:600;color:#fff;background:#1d4ed8;border:0;border-radius:4px;cursor:pointer}
.error{color:#991b1b;background:#fef2f2;border:1px solid #fca5a5;border-radius:4px;padding:.6rem}
.muted{color:#4b5563;font-size:.9rem}`;

const STYLE_HASH = `'sha256-${createHash('sha256').update(STYLE).digest('base64')}'`;

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`);
}

/** Security headers for every page; `formTargets` are the origins a form may be sent (or redirected) to. */
export function pageHeaders(formTargets: readonly string[] = []): Record<string, string> {
  return {
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy': [
      `default-src 'none'`,
      `style-src ${STYLE_HASH}`,
      `form-action 'self' ${formTargets.join(' ')}`.trim(),
      `frame-ancestors 'none'`,
      `base-uri 'none'`,
    ].join('; '),
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the form post,
    // which the CSRF check would (rightly) refuse.
    'referrer-policy': 'same-origin',
    'cache-control': 'no-store',
  };
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · Lockstep</title>
<style>${STYLE}</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>
`;
}

export interface LoginPage {
  readonly action: string;
  readonly csrf: string;
  readonly client: string;
  readonly username?: string;
  readonly error?: string;
}

export function loginPage(view: LoginPage): string {
  const error =
    view.error === undefined ? '' : `<p id="login-error" class="error" role="alert">${escapeHtml(view.error)}</p>\n`;
  const invalid = view.error === undefined ? '' : ' aria-invalid="true" aria-describedby="login-error"';
  return page(
    'Sign in',
    `<h1>Sign in</h1>
<p class="muted">to continue to ${escapeHtml(view.client)}</p>
${error}<form method="post" action="${escapeHtml(view.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required maxlength="64" value="${escapeHtml(view.username ?? '')}"${view.username ? '' : ' autofocus'}${invalid}>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required maxlength="256"${view.username ? ' autofocus' : ''}${invalid}>
<button type="submit">Sign in</button>
</form>`,
  );
}

export function messagePage(title: string, message: string): string {
  return page(title, `<h1>${escapeHtml(title)}</h1>\n<p role="alert">${escapeHtml(message)}</p>`);
}

/** oidc-provider's sign-out confirmation: its `form` (op.logoutForm) plus two buttons, no script. */
export function logoutPage(form: string, host: string): string {
  return page(
    'Sign out',
    `<h1>Sign out of ${escapeHtml(host)}?</h1>
${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`,
  );
}
