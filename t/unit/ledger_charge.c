/*
 * ledger_charge: the fine-tuning charges of a ledger from the command
 * line, for the Test::Nginx suites (t/058): what a fine-tuning job does
 * through aiserve_ledger_training_*(), while nginx has the ledger open.
 *
 *   ledger_charge DB reserve ACCOUNT KEY MODEL JOB TOKENS PRICE
 *   ledger_charge DB settle  ACCOUNT MODEL JOB TRAINED_TOKENS
 *   ledger_charge DB release ACCOUNT JOB
 *
 * Exit status 0, 3 for insufficient_quota (its message on stdout), 4 for
 * a job not found, 1 for any other error, 2 for bad arguments.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aiserve_ledger.h"


int
main(int argc, char **argv)
{
    int                rc;
    char               err[256];
    aiserve_ledger_t  *l;

    if (argc < 5) {
        fprintf(stderr, "usage: ledger_charge DB reserve|settle|release "
                "ACCOUNT ...\n");
        return 2;
    }

    if (aiserve_ledger_open(&l, argv[1], 0, AISERVE_LEDGER_NO_PEPPER, err,
                            sizeof(err)) != AISERVE_LEDGER_OK)
    {
        fprintf(stderr, "ledger_charge: %s\n", err);
        return 1;
    }

    err[0] = '\0';

    if (strcmp(argv[2], "reserve") == 0 && argc == 9) {
        rc = aiserve_ledger_training_reserve(l, atoi(argv[3]), atoi(argv[4]),
                 argv[5], argv[6], atoll(argv[7]), strtoull(argv[8], NULL, 10),
                 time(NULL), err, sizeof(err));

    } else if (strcmp(argv[2], "settle") == 0 && argc == 7) {
        rc = aiserve_ledger_training_settle(l, atoi(argv[3]), argv[4],
                 argv[5], atoll(argv[6]), time(NULL), err, sizeof(err));

    } else if (strcmp(argv[2], "release") == 0 && argc == 5) {
        rc = aiserve_ledger_training_release(l, atoi(argv[3]), argv[4],
                 time(NULL), err, sizeof(err));

    } else {
        fprintf(stderr, "ledger_charge: bad arguments\n");
        aiserve_ledger_close(l);
        return 2;
    }

    aiserve_ledger_close(l);

    if (rc == AISERVE_LEDGER_OK) {
        return 0;
    }

    printf("%s\n", err);

    return strncmp(err, "insufficient_quota", 18) == 0 ? 3
           : rc == AISERVE_LEDGER_NOTFOUND ? 4 : 1;
}
