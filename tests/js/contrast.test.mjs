// WCAG AA for the sidebar's muted text: the ratio of --muted on --side (and
// on --bg) is computed from the colours in public/style.css, light and dark.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';

const css = fs.readFileSync(new URL('../../public/style.css', import.meta.url), 'utf8');
// The first block of custom properties is light, the one in
// prefers-color-scheme: dark overrides it.
function vars(block) {
  const out = {};
  for (const m of block.matchAll(/--([a-z-]+):\s*(#[0-9a-f]{6})\b/gi)) out[m[1]] = m[2];
  return out;
}
const light = vars(css.slice(css.indexOf(':root'), css.indexOf('}', css.indexOf(':root'))));
const darkAt = css.indexOf(':root', css.indexOf('prefers-color-scheme: dark'));
const dark = { ...light, ...vars(css.slice(darkAt, css.indexOf('}', darkAt))) };

function luminance(hex) {
  const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255)
    .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
  return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
}
export function ratio(a, b) {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
}

test('the contrast formula matches known values', () => {
  assert.equal(ratio('#000000', '#ffffff').toFixed(1), '21.0');
  assert.equal(ratio('#777777', '#ffffff').toFixed(2), '4.48');
});

for (const [name, v] of [['light', light], ['dark', dark]]) {
  test(`${name}: muted text meets AA (4.5:1) on the sidebar and the page`, () => {
    for (const bg of ['side', 'bg', 'bg-soft']) {
      assert.ok(v.muted && v[bg], `--muted and --${bg} are set`);
      const r = ratio(v.muted, v[bg]);
      console.log(`# ${name} --muted ${v.muted} on --${bg} ${v[bg]}: ${r.toFixed(2)}:1`);
      assert.ok(r >= 4.5, `${name} --muted on --${bg} is ${r.toFixed(2)}:1`);
    }
  });
}
