/* vmd test guests: SIGNAL PROCESSOR orders and status bits (PoP ch. 4). */
#ifndef SMP_H
#define SMP_H

#define SIGP_SENSE              0x01
#define SIGP_EXTERNAL_CALL      0x02
#define SIGP_EMERGENCY_SIGNAL   0x03
#define SIGP_START              0x04
#define SIGP_STOP               0x05
#define SIGP_RESTART            0x06
#define SIGP_STOP_STORE_STATUS  0x09
#define SIGP_INITIAL_CPU_RESET  0x0b
#define SIGP_CPU_RESET          0x0c
#define SIGP_SET_PREFIX         0x0d
#define SIGP_STORE_STATUS_ADDR  0x0e

/* status bits stored in bits 32-63 of R1 with cc 1 */
#define SIGP_STAT_EQUIPMENT_CHECK   0x80000000u
#define SIGP_STAT_INCORRECT_STATE   0x00000200u
#define SIGP_STAT_INVALID_PARAMETER 0x00000100u
#define SIGP_STAT_EXT_CALL_PENDING  0x00000080u
#define SIGP_STAT_STOPPED           0x00000040u
#define SIGP_STAT_OPERATOR_INTERV   0x00000020u
#define SIGP_STAT_CHECK_STOP        0x00000010u
#define SIGP_STAT_INOPERATIVE       0x00000004u
#define SIGP_STAT_INVALID_ORDER     0x00000002u
#define SIGP_STAT_RECEIVER_CHECK    0x00000001u

int sigp(u16 addr, u8 order, u64 param, u32 *status);
int sigp_retry(u16 addr, u8 order, u64 param, u32 *status);
int cpu_stopped(u16 addr);
int stop_cpu(u16 addr);
void stop_self(void) __attribute__((noreturn));
void secondary_main(void);

#endif
