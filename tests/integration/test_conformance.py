"""The conformance list (conformance.py) holds: every language names a
test or a gap for every scenario, and every test it names exists.  Prints
the matrix, gaps included, so a run's log shows what each package is
checked for."""

import ast
import os
import re
import unittest

from conformance import COVERAGE, SCENARIOS, Gap

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(
    __file__)), '..', '..'))


def _python_names(path):
    """{'Class.method', 'function'} defined in a Python file."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f'{node.name}.{item.name}')
    return names


def exists(ref):
    """None if the test ref names is there, else why not."""
    path, sep, name = ref.partition('::')
    if not sep or not name:
        return f'{ref!r} is not PATH::NAME'
    full = os.path.join(TOP, path)
    if not os.path.isfile(full):
        return f'{path}: no such file'
    if path.endswith('.py'):
        return None if name in _python_names(full) else \
            f'{path}: no {name}'
    with open(full, encoding='utf-8') as f:
        text = f.read()
    if path.endswith('.test.js'):
        # test('title ...' or test(`title ...`
        quoted = re.escape(name)
        if re.search(r"\btest\(\s*['`\"]" + quoted, text):
            return None
        return f'{path}: no test titled {name!r}...'
    if path.endswith('_test.go'):
        if re.search(r'^func ' + re.escape(name) + r'\(t \*testing\.T\)',
                     text, re.M):
            return None
        return f'{path}: no func {name}(t *testing.T)'
    return f'{path}: not a kind of test file this list knows'


class Conformance(unittest.TestCase):

    def test_every_language_answers_every_scenario(self):
        for lang, cover in COVERAGE.items():
            with self.subTest(lang=lang):
                self.assertEqual(sorted(set(SCENARIOS) - set(cover)), [],
                                 f'{lang}: scenarios with no test and no '
                                 'stated gap')
                self.assertEqual(sorted(set(cover) - set(SCENARIOS)), [],
                                 f'{lang}: not scenarios')

    def test_named_tests_exist(self):
        for lang, cover in COVERAGE.items():
            for scenario, ref in cover.items():
                if isinstance(ref, Gap):
                    self.assertTrue(ref.strip(), f'{lang} {scenario}: a '
                                    'gap says why')
                    continue
                with self.subTest(lang=lang, scenario=scenario):
                    self.assertIsNone(exists(ref))

    def test_checker_sees_a_missing_test(self):
        # The checker itself can fail.
        self.assertIsNotNone(exists('tests/integration/test_pool.py::'
                                    'Pool.test_no_such_thing'))
        self.assertIsNotNone(exists(
            'client-lib/node/test/pool.test.js::no such title'))
        self.assertIsNotNone(exists('client-lib/go/client_test.go::TestNo'))
        self.assertIsNotNone(exists('tests/integration/nope.py::A.b'))

    @classmethod
    def tearDownClass(cls):
        langs = list(COVERAGE)
        width = max(map(len, SCENARIOS))
        print('\nconformance: ' + ' | '.join(langs))
        for s in SCENARIOS:
            cells = ['gap' if isinstance(COVERAGE[lang].get(s), Gap)
                     else 'test' for lang in langs]
            print(f'  {s:<{width}}  ' + '  '.join(
                f'{c:<{len(lang)}}' for c, lang in zip(cells, langs)))


if __name__ == '__main__':
    unittest.main(verbosity=2)
