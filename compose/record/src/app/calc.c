#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: calc A B\n"); return 2; }
  printf("%ld\n", strtol(argv[1], 0, 10) * strtol(argv[2], 0, 10));
  return 0;
}
