import subprocess
import unittest


class CalcTest(unittest.TestCase):
    def test_multiplies(self):
        out = subprocess.run(["./calc", "6", "7"], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "42")


if __name__ == "__main__":
    unittest.main()
