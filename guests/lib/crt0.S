/*
 * vmd test guests: start-up code and interruption entry points.
 *
 * Entry: QEMU's -kernel path (hw/s390x/ipl.c) loads the ELF's PT_LOAD
 * segments at their physical addresses and starts the IPL CPU at the ELF
 * entry point with the PSW mask EA|BA (64-bit addressing, DAT off, every
 * interruption disabled, supervisor state, key 0).  The guests are linked at
 * 0x20000, not 0x10000: for an entry point of 0x10000 (or 0x800) QEMU takes
 * the image for a Linux kernel and copies the command line to 0x10480.
 * No register contents are assumed; the lowcore is set up here.
 *
 * Lowcore software area (real addresses, so per CPU under prefixing):
 *   0x200 program, 0x280 external, 0x300 I/O, 0x380 SVC register save areas;
 *   0x400 SVC, 0x408 I/O, 0x410 program, 0x418 external interrupt-stack tops.
 * The new PSWs are all disabled for I/O and external interruptions, so the
 * handlers never nest, except that a program-interruption handler may print
 * (which waits for a service-signal external interruption on its own stack).
 */
        .file   "crt0.S"

        .section .text.start, "ax"
        .globl  _start
_start:
        larl    %r15, stack_top
        /* clear .bss (the stacks included) with MOVE LONG EXTENDED, pad 0 */
        larl    %r2, __bss_start
        larl    %r3, __bss_end
        sgr     %r3, %r2
        lghi    %r4, 0
        lghi    %r5, 0
0:      mvcle   %r2, %r4, 0
        jo      0b
        /* lowcore of the IPL CPU (prefix 0): new PSWs and interrupt stacks */
        lghi    %r2, 0
        larl    %r3, irq_stacks_cpu0_top
        brasl   %r14, lowcore_init
        aghi    %r15, -160
        brasl   %r14, main
        brasl   %r14, finish            /* does not return */
        j       .

/*
 * void lowcore_init(void *lowcore, u64 irq_stack_top)
 * Writes the six new PSWs and four interrupt-stack tops (8 KiB apart, the
 * external one at the top) into the 8 KiB lowcore at absolute address r2.
 */
        .text
        .globl  lowcore_init
lowcore_init:
        llihl   %r0, 1                  /* r0 = 0x0000000100000000 (EA) */
        oilh    %r0, 0x8000             /* | BA */
        larl    %r1, restart_stub
        stg     %r0, 0x1a0(%r2)
        stg     %r1, 0x1a8(%r2)
        larl    %r1, ext_stub
        stg     %r0, 0x1b0(%r2)
        stg     %r1, 0x1b8(%r2)
        larl    %r1, svc_stub
        stg     %r0, 0x1c0(%r2)
        stg     %r1, 0x1c8(%r2)
        larl    %r1, pgm_stub
        stg     %r0, 0x1d0(%r2)
        stg     %r1, 0x1d8(%r2)
        larl    %r1, mcck_stub
        stg     %r0, 0x1e0(%r2)
        stg     %r1, 0x1e8(%r2)
        larl    %r1, io_stub
        stg     %r0, 0x1f0(%r2)
        stg     %r1, 0x1f8(%r2)
        stg     %r3, 0x418(%r2)         /* external */
        aghi    %r3, -8192
        stg     %r3, 0x410(%r2)         /* program */
        aghi    %r3, -8192
        stg     %r3, 0x408(%r2)         /* I/O */
        aghi    %r3, -8192
        stg     %r3, 0x400(%r2)         /* SVC */
        br      %r14

/*
 * Interruption stubs: save the GPRs in the lowcore, switch to this class's
 * stack, call the C handler, restore, clear the wait bit of the old PSW (so
 * that an enabled wait ends with the interruption) and load the old PSW.
 */
        .macro  STUB name, save, stack, oldpsw, handler
\name:
        stmg    %r0, %r15, \save
        lg      %r15, \stack
        aghi    %r15, -160
        brasl   %r14, \handler
        ni      \oldpsw + 1, 0xfd
        lmg     %r0, %r15, \save
        lpswe   \oldpsw
        .endm

        STUB    pgm_stub, 0x200, 0x410, 0x150, c_pgm
        STUB    ext_stub, 0x280, 0x418, 0x130, c_ext
        STUB    io_stub,  0x300, 0x408, 0x170, c_io
        STUB    svc_stub, 0x380, 0x400, 0x140, c_svc

restart_stub:                           /* restart of the IPL CPU: not expected */
        lg      %r15, 0x410
        aghi    %r15, -160
        lghi    %r2, 0x0e5              /* "restart" */
        brasl   %r14, panic_wait
mcck_stub:                              /* machine check: not expected */
        lghi    %r2, 0x0c4
        larl    %r1, panic_psw
        stg     %r2, 8(%r1)
        lpswe   0(%r1)

/*
 * Restart-PSW target of the other CPUs (sigp guest): stack from
 * secondary_stack_top, then secondary_main(); stops itself when it returns.
 */
        .globl  secondary_entry
secondary_entry:
        larl    %r1, secondary_stack_top
        lg      %r15, 0(%r1)
        aghi    %r15, -160
        brasl   %r14, secondary_main
        brasl   %r14, stop_self
        j       .

/* void load_psw(const struct psw *) */
        .globl  load_psw
load_psw:
        lpswe   0(%r2)

/*
 * void panic_wait(u64 code): disabled wait whose address is the code
 * (never ending in 0xfff, which would be the quiesce PSW).  QEMU reports
 * GUEST_PANICKED with reason disabled-wait.
 */
        .globl  panic_wait
panic_wait:
        larl    %r1, panic_psw
        sllg    %r2, %r2, 12            /* low 12 bits 0: never 0xfff */
        stg     %r2, 8(%r1)
        lpswe   0(%r1)

/*
 * void quiesce_wait(void): the disabled-wait PSW with address 0xfff that
 * Linux loads after a signal-quiesce event; QEMU treats it, on the last
 * running CPU, as a guest shutdown.  Used only as a fallback after SIGP stop.
 */
        .globl  quiesce_wait
quiesce_wait:
        larl    %r1, quiesce_psw
        lpswe   0(%r1)

        .section .data
        .align  8
panic_psw:
        .quad   0x0002000180000000, 0
quiesce_psw:
        .quad   0x0002000180000000, 0xfff

        .section .bss
        .align  4096
        .globl  stack_top
stack:  .skip   65536
stack_top:
irq_stacks_cpu0:
        .skip   4 * 8192
irq_stacks_cpu0_top:
