/*
 * vmd firmware: entry, relocation, interruption entry points, waits and the
 * hand-over to the loaded program.
 *
 * Entry: the machine starts the IPL CPU at the ELF entry point plus the load
 * base with the PSW mask EA|BA (64-bit addressing, DAT off, every
 * interruption masked, supervisor state, key 0).  No register contents are
 * assumed.  The image is linked at 0 with _start first, so the run-time
 * address of _start is the load base.
 */
        .file   "start.S"

#define R_390_RELATIVE  12

        .section .text.start, "ax"
        .globl  _start
_start:
        larl    %r13, _start            /* load base */
        /* slot = base + addend for every R_390_RELATIVE entry */
        larl    %r2, __rela_start
        larl    %r3, __rela_end
0:      clgr    %r2, %r3
        jhe     2f
        lg      %r4, 8(%r2)             /* r_info: symbol 0, type RELATIVE */
        cghi    %r4, R_390_RELATIVE
        jne     bad_relocation
        lg      %r5, 0(%r2)             /* r_offset */
        lg      %r6, 16(%r2)            /* r_addend */
        agr     %r6, %r13
        stg     %r6, 0(%r5,%r13)
        aghi    %r2, 24
        j       0b
2:      /* clear .bss (the stacks included) with MOVE LONG EXTENDED, pad 0 */
        larl    %r2, __bss_start
        larl    %r3, __bss_end
        sgr     %r3, %r2
        lghi    %r4, 0
        lghi    %r5, 0
3:      mvcle   %r2, %r4, 0
        jo      3b
        larl    %r15, stack_top
        aghi    %r15, -160
        lghi    %r0, 0
        stg     %r0, 0(%r15)            /* end of the back chain */
        brasl   %r14, fw_main           /* does not return */
        llihh   %r2, 0x766d             /* WAIT_START_FAILED */
        iihl    %r2, 0x6466
        oill    %r2, 0x0800
        j       disabled_wait

bad_relocation:
        larl    %r1, relocation_wait_psw
        lpswe   0(%r1)

/*
 * noreturn void disabled_wait(u64 code): a disabled wait whose PSW address
 * is the code (fw.h, WAIT_*).
 */
        .text
        .globl  disabled_wait
disabled_wait:
        larl    %r1, wait_psw
        stg     %r2, 8(%r1)
        lpswe   0(%r1)

/*
 * void wait_for_external(void): loads an enabled wait PSW (external mask
 * only) and returns after one external interruption.  The external new PSW
 * is written here, right before the wait, because a loaded program may have
 * overwritten the lowcore.  The interruption leaves the registers alone, so
 * the new PSW can simply point at the return.
 */
        .globl  wait_for_external
wait_for_external:
        larl    %r1, 1f
        stg     %r1, 0x1b8
        llihl   %r1, 1                  /* EA */
        oilh    %r1, 0x8000             /* BA */
        stg     %r1, 0x1b0
        larl    %r1, external_wait_psw
        lpswe   0(%r1)
1:      br      %r14

/*
 * void install_new_psws(void): program interruptions go to pgm_entry; the
 * other classes are never enabled, so reaching them is a disabled wait.
 */
        .globl  install_new_psws
install_new_psws:
        llihl   %r0, 1
        oilh    %r0, 0x8000             /* 64-bit, disabled */
        larl    %r1, pgm_entry
        stg     %r0, 0x1d0
        stg     %r1, 0x1d8
        larl    %r1, unexpected_interruption
        stg     %r0, 0x1a0              /* restart */
        stg     %r1, 0x1a8
        stg     %r0, 0x1c0              /* SVC */
        stg     %r1, 0x1c8
        stg     %r0, 0x1e0              /* machine check */
        stg     %r1, 0x1e8
        stg     %r0, 0x1f0              /* I/O */
        stg     %r1, 0x1f8
        br      %r14

unexpected_interruption:
        llihh   %r2, 0x766d             /* WAIT_PROGRAM_CHECK */
        iihl    %r2, 0x6466
        oill    %r2, 0x0700
        j       disabled_wait

/*
 * Program interruption: with a probe armed (probe_state set), resume at its
 * fw_setjmp with 1; else report and stop (program_check_report).
 */
pgm_entry:
        stmg    %r0, %r15, 0x200
        larl    %r1, probe_state
        ltg     %r2, 0(%r1)
        jz      1f
        lghi    %r0, 0
        stg     %r0, 0(%r1)             /* disarm */
        lghi    %r3, 1
        j       fw_longjmp
1:      larl    %r15, pgm_stack_top
        aghi    %r15, -160
        brasl   %r14, program_check_report
        j       unexpected_interruption

/* int fw_setjmp(struct jmp_state *): saves r6-r15, returns 0 */
        .globl  fw_setjmp
fw_setjmp:
        stmg    %r6, %r15, 0(%r2)
        lghi    %r2, 0
        br      %r14

/* noreturn void fw_longjmp(struct jmp_state *, int value) */
        .globl  fw_longjmp
fw_longjmp:
        lmg     %r6, %r15, 0(%r2)
        lgfr    %r2, %r3
        br      %r14

/*
 * The target of the IPL PSW that ipl_start writes to address 0 when the
 * program starts at an address of its own (the Linux entry 0x10000): after
 * load-normal it puts address 0's content back and branches to the entry.
 * It needs no register contents.
 */
        .globl  ipl_trampoline
ipl_trampoline:
        larl    %r1, ipl_saved_word
        lghi    %r2, 0
        mvc     0(8,%r2), 0(%r1)
        larl    %r1, ipl_continue
        lg      %r1, 0(%r1)
        br      %r1

        .section .data
        .align  8
wait_psw:
        .quad   0x0002000180000000, 0
external_wait_psw:
        .quad   0x0102000180000000, 0
relocation_wait_psw:
        .quad   0x0002000180000000, 0x766d646600000900
        .globl  ipl_saved_word, ipl_continue, probe_state
ipl_saved_word:
        .quad   0
ipl_continue:
        .quad   0
probe_state:
        .quad   0

        .section .bss
        .align  4096
        .skip   32768
stack_top:
        .skip   8192
pgm_stack_top:
