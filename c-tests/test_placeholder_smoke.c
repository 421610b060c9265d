#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "kpalloc.h"
static void status_names(void **state) { (void)state; assert_string_equal(page_status_str(PAGE_ENOMEM), "PAGE_ENOMEM"); }
int main(void) { const struct CMUnitTest tests[] = { cmocka_unit_test(status_names) }; return cmocka_run_group_tests(tests, NULL, NULL); }
