/* Prints the effective uid. Installed set-uid root in the nonewprivs test
 * image: with no_new_privs set the set-uid bit has no effect. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %u\n", (unsigned)geteuid());
	return 0;
}
