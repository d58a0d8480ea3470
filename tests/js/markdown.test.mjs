// The markdown parser of the page (public/markdown.js): what it recognises
// and what it leaves as text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse, parseInline } from '../../public/markdown.js';

test('bold, italic, code and links', () => {
  assert.deepEqual(parseInline('a **b** _c_ `d*e*` https://x.org/p.'), [
    { t: 'text', v: 'a ' }, { t: 'strong', kids: [{ t: 'text', v: 'b' }] }, { t: 'text', v: ' ' },
    { t: 'em', kids: [{ t: 'text', v: 'c' }] }, { t: 'text', v: ' ' }, { t: 'code', v: 'd*e*' },
    { t: 'text', v: ' ' }, { t: 'link', href: 'https://x.org/p', v: 'https://x.org/p' }, { t: 'text', v: '.' },
  ]);
  assert.deepEqual(parseInline('see www.example.com!'), [
    { t: 'text', v: 'see ' }, { t: 'link', href: 'https://www.example.com', v: 'www.example.com' }, { t: 'text', v: '!' },
  ]);
});

test('what stays text: snake_case, lone stars, javascript: and HTML', () => {
  assert.deepEqual(parseInline('snake_case_name'), [{ t: 'text', v: 'snake_case_name' }]);
  assert.deepEqual(parseInline('2 * 3 ** 4'), [{ t: 'text', v: '2 * 3 ** 4' }]);
  assert.deepEqual(parseInline('javascript:alert(1) <b>x</b>'), [{ t: 'text', v: 'javascript:alert(1) <b>x</b>' }]);
  assert.deepEqual(parseInline('ftp://x.org'), [{ t: 'text', v: 'ftp://x.org' }]);
});

test('fenced code, quotes, plain lines keep their line breaks', () => {
  assert.deepEqual(parse('one\ntwo'), [{ t: 'p', kids: [{ t: 'text', v: 'one\ntwo' }] }]);
  assert.deepEqual(parse('> a\n> **b**\nafter\n```\nx **y**\n```'), [
    { t: 'quote', kids: [{ t: 'text', v: 'a\n' }, { t: 'strong', kids: [{ t: 'text', v: 'b' }] }] },
    { t: 'p', kids: [{ t: 'text', v: 'after' }] },
    { t: 'pre', v: 'x **y**' },
  ]);
  // An unclosed fence is text.
  assert.deepEqual(parse('```\nno end'), [{ t: 'p', kids: [{ t: 'text', v: '```\nno end' }] }]);
});
