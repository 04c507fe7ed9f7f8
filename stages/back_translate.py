"""back_translate: the clean training split's selected rows translated to a pivot language and back by a
vendored model pair (reprolab.data.back_translation) -> data/augmented/back_translated.parquet (every
selected row with its status), reports/back_translation.json (rows in = translated + failed). augment
adds the new paraphrases to its copies. Off by default (`augment.back_translation: null`): an empty table.
"""

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.data import back_translation
from reprolab.errors import run_stage
from reprolab.params import load_params
from reprolab.records import tracking


def main() -> None:
    params = load_params()
    source = paths.clean_split("train")
    report = back_translation.back_translate_file(source, paths.BACK_TRANSLATED, params)
    storage.write_json(report, paths.BACK_TRANSLATION_REPORT)
    if report["enabled"]:
        print(
            f"back_translate: {report['rows_in']} rows in: {report['translated']} translated "
            f"({report['added']} added, {report['identical']} identical, {report['empty']} empty), "
            f"{report['failed']} failed"
        )
    else:
        print("back_translate: off (augment.back_translation is null)")
    tracking.log_stage(
        "back_translate",
        params,
        outputs=[paths.BACK_TRANSLATED, paths.BACK_TRANSLATION_REPORT],
        metrics={key: value for key, value in report.items() if key != "failures"},
        inputs={"train": source},
    )


if __name__ == "__main__":
    run_stage(main)
