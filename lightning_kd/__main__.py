from lightning_kd.cli import console

if __name__ == "__main__":
    console()
