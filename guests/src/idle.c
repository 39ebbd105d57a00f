/*
 * idle: greets, then waits enabled for I/O and external interruptions for
 * ever.  Not a test of its own: the stand-in for a running operating system
 * that the control-plane tests (QMP, JSON-RPC, systemd) give a machine, since
 * without -kernel the firmware would find nothing to boot and end the run.
 */
#include "guest.h"

int main(void)
{
    printf("vmd test guest: idle\n");
    for (;;)
        enabled_wait(PSW_EXT | PSW_IO);
}
